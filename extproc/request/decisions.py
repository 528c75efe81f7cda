"""Moved to extproc.decisions; this alias goes once every importer has moved."""

from extproc.decisions import *  # noqa: F403
from extproc.decisions import METADATA_NAMESPACE, STATUS, VERDICT  # noqa: F401
