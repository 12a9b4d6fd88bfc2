"""A pycuda stand-in for tests (tests/standins/, never installed with edgekd): see pycuda/driver.py.

It is what `import pycuda` finds when tests/standins is first on PYTHONPATH; `VERSION_TEXT` says so.
"""

VERSION = (2022, 1)
VERSION_STATUS = "standin"
VERSION_TEXT = "2022.1-standin"
