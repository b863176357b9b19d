"""The bounds every event field obeys, checked when decoding, so a bad event is parked, not folded.

Sized so that the largest event the catalogue allows (every string and list at its bound,
plain ASCII) still fits MAX_EVENT_BYTES (tests/test_poison_folds.py builds it); the streams refuse
anything larger (eventbus/streams.py sets max_msg_size from it).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Union

from msgspec import Meta

from eventbus.limits import ID_MAX

MAX_EVENT_BYTES = 256 * 1024
REF_MAX = 2 * ID_MAX  # ids derived from others ("eval-<model id>", "<work id>-a<attempt>") fit too
NAME_MAX = 128  # short names: board and work types, roles, kinds, versions, hashes
TEXT_MAX = 2000  # sentences: reasons, messages, errors
PATH_MAX = 4096  # a file path (Linux PATH_MAX)
INPUT_PATH_MAX = 1024  # one input file of a job, many of which share one event (a batch path is ~150 characters)
INPUTS_MAX = 64  # input batches one training item names (the pipeline gives it at most 50)
TAIL_MAX = 16 * 1024  # a failed attempt's stderr tail
BIG = 2**53  # the largest integer every JSON reader keeps exactly; counts, sizes, epochs stay below
SECONDS_MAX = 1e9  # about 31 years
CHANGES_MAX = 64  # keys one CONFIG_CHANGED lists; more are summed up by the file's hash
CHANGE_VALUE_MAX = 1024  # JSON of one changed value; a larger one is recorded as its hash

Ref = Annotated[str, Meta(max_length=REF_MAX)]
Name = Annotated[str, Meta(max_length=NAME_MAX)]
Text = Annotated[str, Meta(max_length=TEXT_MAX)]
Path = Annotated[str, Meta(max_length=PATH_MAX)]
InputPath = Annotated[str, Meta(max_length=INPUT_PATH_MAX)]
Count = Annotated[int, Meta(ge=0, le=BIG)]
Small = Annotated[int, Meta(ge=0, le=1_000_000)]  # attempts, generations, games of one job
Players = Annotated[int, Meta(ge=1, le=64)]
Seconds = Annotated[float, Meta(ge=0, le=SECONDS_MAX)]
Fraction = Annotated[float, Meta(ge=0, le=1)]
Percent = Annotated[float, Meta(ge=0, le=100)]
Gigabytes = Annotated[float, Meta(ge=0, le=1e9)]
Measure = Annotated[float, Meta(ge=-1e12, le=1e12)]  # a training metric, an Elo rating
Time = Annotated[dt.datetime, Meta(tz=True)]  # naive times cannot be compared with the UTC ones
Scalar = Union[Annotated[str, Meta(max_length=TEXT_MAX)], Annotated[int, Meta(ge=-BIG, le=BIG)], Measure, bool]
