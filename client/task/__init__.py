"""Task data, one front door: `read_task_file` reads JSONL, CSV, TSV or plain text."""

from lmdock.client.task.data import MIN_SEARCH_RECORDS, Columns, ReaderLimits, TaskData
from lmdock.client.task.read import FORMATS, read_task_file

__all__ = ["FORMATS", "MIN_SEARCH_RECORDS", "Columns", "ReaderLimits", "TaskData", "read_task_file"]
