"""The tests' tiny data: the package's toy reviews."""

from ulmfit_lab.toy import make_reviews, review  # noqa: F401
