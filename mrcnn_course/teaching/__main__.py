"""python -m mrcnn_course.teaching release | autograde | grades  (course.py says what each does)."""

import sys

from mrcnn_course.teaching.course import main

sys.exit(main())
