"""Teaching: grading that explains, quizzes, and nbgrader's release/autograde/grades.

      grading/            each exercise declared once (exercises_<stage>.py), one judge, the guard
      quiz.py             sealed multiple-choice keys and immediate feedback (no torch: quizzes load fast)
      nbgrader_steps.py   the course's steps in nbgrader's pipelines (sealing quiz keys, AUTOGRADING=1)
      autograding.py      what a notebook does under AUTOGRADING=1: autograding(), recipe_for_notebooks (QUICK)
      course.py           release, autograde, grades, nbgrader's exchange, as functions of the course's root
      warm_kernels.py     autograding's kernels, forked from a process that has imported what lessons import
      __main__.py         the command line over course.py and dashboard.py: `python -m mrcnn_course.teaching release`
      dashboard.py        the class at a glance from the gradebook: scores, pass rates, failing cases (make dashboard)
      notebook_errors.py  a check run before the cell it needs says which cell to run (no raw NameError)

Uses the model, training and pictures; nothing imports it but notebooks, nbgrader_config.py and tests.
Importing this package loads nothing else: quiz notebooks and nbgrader's configuration stay light.
"""
