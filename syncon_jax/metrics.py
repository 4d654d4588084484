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


class MetricWriter:
  """Appends one JSON object per logged step and the same scalars to TensorBoard."""

  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
    self._events_file = open(os.path.join(workdir, name), "wb")
    self._events = record_writer.RecordWriter(self._events_file)
    self._write_event(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

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
  """Drops INFO records from orbax, which logs every step of every save at INFO."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


def quiet_library_logs() -> None:
  from absl import logging as absl_logging

  absl_logging.get_absl_handler().addFilter(_DropLibraryInfo())
