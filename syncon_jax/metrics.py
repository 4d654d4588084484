"""Metric sinks: <workdir>/metrics.jsonl and TensorBoard events, written by process 0 only.

TensorBoard events are written with tensorboard's record writer and protos directly: going
through tf.summary (or tensorboard's EventFileWriter) imports TensorFlow, which costs ~10 s at
start-up for a run that otherwise never needs it.
"""

import json
import logging
import os
import socket
import time

import jax
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer import record_writer


def truncate_jsonl(path: str, last_step: int) -> int:
  """Drops the rows of a metrics.jsonl whose step is past last_step; -> how many were dropped.

  A run that restarts from the checkpoint at last_step logs the steps after it again; the rows
  an earlier attempt wrote for them describe a trajectory that no checkpoint holds.
  """
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  keep = [line for line in lines if json.loads(line)["step"] <= last_step]
  if len(keep) != len(lines):
    with open(path + ".tmp", "w") as f:
      f.writelines(keep)
    os.replace(path + ".tmp", path)
  return len(lines) - len(keep)


class MetricWriter:
  """Appends one JSON object per logged step and the same scalars to TensorBoard.

  start_step: the step the run starts (or resumes) from. Rows past it, left by an attempt that
  got further than its last checkpoint, are removed from metrics.jsonl, and a SessionLog START
  event at start_step + 1 makes TensorBoard purge that attempt's events from start_step + 1 on
  (its orphaned-data rule).
  """

  def __init__(self, workdir: str, start_step: int = 0):
    self.enabled = jax.process_index() == 0
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "metrics.jsonl")
    dropped = truncate_jsonl(path, start_step)
    if dropped:
      logging.getLogger(__name__).info(
        "Dropped %d rows past step %d from %s (logged after the last checkpoint).",
        dropped,
        start_step,
        path,
      )
    self._jsonl = open(path, "a")
    base = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
    name, n = base, 0
    while os.path.exists(os.path.join(workdir, name)):  # a writer of the same second and process
      n += 1
      name = f"{base}.{n}"
    self._events_file = open(os.path.join(workdir, name), "wb")
    self._events = record_writer.RecordWriter(self._events_file)
    self._write_event(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
    self._write_event(
      event_pb2.Event(
        wall_time=time.time(),
        step=start_step + 1,
        session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START),
      )
    )
    self._events.flush()

  def _write_event(self, event) -> None:
    self._events.write(event.SerializeToString())

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()
    values = [
      summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in row.items() if k != "step"
    ]
    self._write_event(
      event_pb2.Event(
        wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values)
      )
    )
    self._events.flush()

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._events.close()


class _DropLibraryInfo(logging.Filter):
  """Drops INFO records from orbax, which logs every step of every save at INFO, and jax's
  "Unable to initialize backend 'tpu'" on every machine without a TPU."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno >= logging.WARNING:
      return True
    if "/orbax/" in record.pathname:
      return False
    return not str(record.msg).startswith("Unable to initialize backend")


def quiet_library_logs() -> None:
  from absl import logging as absl_logging

  absl_logging.get_absl_handler().addFilter(_DropLibraryInfo())
