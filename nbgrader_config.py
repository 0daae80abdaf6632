# nbgrader's configuration for "Mask R-CNN, stage by stage". nbgrader reads it from the current
# directory: run nbgrader, `make release/autograde/grades` and JupyterLab (for the formgrader) from
# the repository root. What each folder holds: see "Teaching with this course" in README.md.
import os
import sys

from mrcnn_course.teaching import nbgrader_steps

c = get_config()  # noqa: F821 (traitlets defines get_config when it loads this file)
root = os.path.dirname(os.path.abspath(__file__))

c.CourseDirectory.root = root
c.CourseDirectory.course_id = "mrcnn-course"  # the exchange (JupyterHub) files assignments under it
c.CourseDirectory.source_directory = "solutions"  # instructor versions: solutions/NN_name, solutions/quiz_NN_name
c.CourseDirectory.release_directory = "lessons"  # quizzes: --CourseDirectory.release_directory=quizzes

# Everything about learners' work lives in grading/ (git-ignored), never in the committed tree.
grading = "grading"
c.CourseDirectory.submitted_directory = os.path.join(grading, "submitted")  # <learner>/<assignment>/
c.CourseDirectory.autograded_directory = os.path.join(grading, "autograded")
c.CourseDirectory.feedback_directory = os.path.join(grading, "feedback")
# The gradebook: a SQLite file by default. NBGRADER_DB_URL names another database nbgrader can use,
# e.g. postgresql://grader@db.example.org/mrcnn (through psycopg), that several machines grade into.
sqlite_gradebook = "sqlite:///" + os.path.join(root, grading, "gradebook.db")
c.CourseDirectory.db_url = os.environ.get("NBGRADER_DB_URL") or sqlite_gradebook
# nbgrader's exchange (JupyterHub: release_assignment, fetch, submit, collect): a folder every user can
# write to, which must exist before the formgrader shows its Release and Collect buttons (`make exchange`
# creates it). nbgrader 0.9.6's own default; NBGRADER_EXCHANGE moves it (learners then pass the same
# folder with --Exchange.root=...).
c.Exchange.root = os.environ.get("NBGRADER_EXCHANGE") or "/usr/local/share/nbgrader/exchange"
c.ZipCollectApp.downloaded_directory = os.path.join(grading, "downloaded")  # nbgrader zip_collect (LMS zips)
os.makedirs(os.path.join(root, grading), exist_ok=True)  # SQLite creates the database file, not its folder
# nbgrader's Gradebook runs the `alembic` command: find the one installed next to this Python even
# when its environment is not activated (`.venv/bin/nbgrader ...`, `make autograde`).
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

# Autograding: a cell that runs longer than this is interrupted (an endless loop scores 0 on the
# cells that need it; later cells still run). Lessons' slowest cells take well under a minute on a
# laptop, and they shorten training when AUTOGRADING=1.
c.Execute.timeout = 120
# A learner who deletes a graded test cell is still graded on it: nbgrader puts it back.
c.OverwriteCells.add_missing_cells = True

# The course's steps in nbgrader's pipelines (mrcnn_course/nbgrader_steps.py says what each does):
# release seals quiz answers and keeps quiz answer cells as `q1 = None`; autograding runs kernels
# with AUTOGRADING=1 and TQDM_DISABLE=1.
c.GenerateAssignment.preprocessors = nbgrader_steps.RELEASE_PREPROCESSORS
c.Autograde.autograde_preprocessors = nbgrader_steps.AUTOGRADE_PREPROCESSORS
