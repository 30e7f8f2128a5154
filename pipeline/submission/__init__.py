"""ABAW test-submission files: formats (`formats`), writing (`writers`) and checking (`validate`)."""

from pipeline.submission.formats import (
    SUBMISSIONS,
    SubmissionFormat,
    expected_locations,
    frame_location,
    get_format,
)
from pipeline.submission.validate import SubmissionError, check_submission, validate_submission
from pipeline.submission.writers import prediction_column, submission_lines, write_submission

__all__ = [
    "SUBMISSIONS",
    "SubmissionError",
    "SubmissionFormat",
    "check_submission",
    "expected_locations",
    "frame_location",
    "get_format",
    "prediction_column",
    "submission_lines",
    "validate_submission",
    "write_submission",
]
