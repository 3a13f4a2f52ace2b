"""The grading pipeline: builds notebooks, releases assignments through nbgrader, autogrades
submissions, and writes grades, feedback and a report. Driven by the ``attnkit`` CLI."""
