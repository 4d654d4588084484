"""Tests for syncon_jax.tools.generate: the folder SynCon reads, resume after a kill, the filter,
the images API with failures, bad input.

The diffusers backend runs a tiny randomly initialised Stable Diffusion pipeline (tiny.py)
on the CPU; the openai backend talks to a fake images API on 127.0.0.1.
"""

from __future__ import annotations

import base64
import errno
import http.server
import io
import json
import os
import threading

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from configs import digits as digits_config
from syncon_jax import data
from syncon_jax.data import digits
from syncon_jax.errors import ConfigError, DataError, UserError
from syncon_jax.tools.generate import backends, classes, prompts, run, tiny, writer

DIGITS = digits.CLASS_NAMES
CLASSES = ["0", "1", "2"]
STEPS = 2
SIZE = 16  # the tiny pipeline's native size (latents 8 px)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  root = tmp_path_factory.mktemp("models")
  return tiny.save_pipeline(str(root / "pipe")), tiny.save_clip(str(root / "clip"))


@pytest.fixture(scope="module")
def tiny_backend(models):
  return backends.DiffusersBackend(
    models[0],
    guidance_scale=2.0,
    num_inference_steps=STEPS,
    image_size=SIZE,
    batch_size=2,
    torch_threads=1,
  )


def _options(out, model, **kw) -> run.Options:
  defaults = dict(
    out=str(out),
    model=model,
    classes=tuple(CLASSES),
    images_per_class=4,
    num_inference_steps=STEPS,
    image_size=SIZE,
    batch_size=2,
    torch_threads=1,
  )
  return run.Options(**{**defaults, **kw})


def _tree(root) -> dict[str, bytes]:
  """Every file under root (hidden ones included) -> its bytes."""
  out = {}
  for folder, _, files in os.walk(root):
    for name in files:
      path = os.path.join(folder, name)
      out[os.path.relpath(path, root)] = open(path, "rb").read()
  return out


def _metadata(out) -> list[dict]:
  with open(os.path.join(out, "metadata.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def test_cli_writes_a_folder_that_syncon_trains_on(models, tmp_path):
  from syncon_jax import train

  classes_file = tmp_path / "classes.txt"
  classes_file.write_text("\n".join(CLASSES) + "\n")
  out = tmp_path / "syn"
  r = run_cli(
    "syncon_jax.tools.generate",
    "--config=configs/digits.py",
    f"--out={out}",
    "--images_per_class=2",
    "--backend=diffusers",
    f"--model={models[0]}",
    f"--classes_file={classes_file}",
    f"--num_inference_steps={STEPS}",
    f"--image_size={SIZE}",
    "--torch_threads=1",
  )
  assert r.returncode == 0, r.stderr[-3000:]
  assert "images/s" in r.stderr and "ETA" in r.stderr
  assert sorted(os.listdir(out)) == [*CLASSES, "metadata.jsonl", "summary.json"]
  lines = _metadata(out)
  assert [m["file"] for m in lines] == [f"{c}/{p:04d}_0000.png" for c in CLASSES for p in (0, 1)]
  templates = prompts.TEMPLATES["digits"]
  for m in lines:
    assert m["prompt"] == templates[m["prompt_id"]].format(m["class"])
    assert m["seed"] == prompts.image_seed(0, m["class"], m["prompt_id"], 0)
    assert (m["backend"], m["model"], m["steps"]) == ("diffusers", models[0], STEPS)
    assert m["guidance_scale"] == 2.0 and m["image_size"] == SIZE
    with Image.open(out / m["file"]) as img:
      assert img.size == (SIZE, SIZE) and img.mode == "RGB"
  summary = json.loads((out / "summary.json").read_text())
  assert summary == {
    c: {"images": 2, "kept": 2, "rejected": 0, "kept_share": None} for c in CLASSES
  }
  # The trainer's reader: labels from the folders, one prompt group per prompt.
  syn = data.load_synthetic(str(out), DIGITS, image_size=16)
  np.testing.assert_array_equal(syn.labels, [0, 0, 1, 1, 2, 2])
  assert syn.missing_classes == DIGITS[3:] and len(set(syn.prompt_ids.tolist())) == 6
  config = digits_config.get_config("runlocal")
  config.data.synthetic_dir = str(out)
  config.total_steps = 2
  config.log_every_steps = 1
  config.checkpoint_every_steps = 2
  train.train_and_evaluate(config, str(tmp_path / "work"))
  rows = [json.loads(x) for x in (tmp_path / "work" / "metrics.jsonl").read_text().splitlines()]
  assert [row["step"] for row in rows] == [1, 2] and all(np.isfinite(r["loss"]) for r in rows)


class _Killed(BaseException):
  """Stands in for a SIGKILL: nothing after it runs (not an Exception, so nothing catches it)."""


def test_killed_run_resumes_to_the_same_folder(tiny_backend, models, tmp_path, monkeypatch):
  config = digits_config.get_config().data
  straight = tmp_path / "straight"
  run.generate(config, _options(straight, models[0]), backend=tiny_backend)
  expected = _tree(straight)
  assert len([f for f in expected if f.endswith(".png")]) == 12

  real_write, real_append = writer.write_atomic, writer.MetadataLog.append

  def kill_at(n, where):
    count = {"n": 0}

    def write(path, payload):
      if where == "write" and count["n"] == n:
        folder, name = os.path.split(path)  # the temporary file a kill mid-write leaves
        with open(os.path.join(folder, f".{name}.tmp{os.getpid()}"), "wb") as f:
          f.write(payload[:10])
        raise _Killed
      real_write(path, payload)
      count["n"] += where == "write"

    def append(self, entry):
      if where in ("append", "torn") and count["n"] == n:
        if where == "torn":  # the line cut before its newline
          with open(self.path, "a") as f:
            f.write(json.dumps(entry)[:25])
        raise _Killed
      real_append(self, entry)
      count["n"] += where != "write"

    monkeypatch.setattr(writer, "write_atomic", write)
    monkeypatch.setattr(writer.MetadataLog, "append", append)

  # Killed before the 6th image is renamed into place; after the 5th image is written but
  # before its metadata line; in the middle of the 8th metadata line.
  for n, where in [(5, "write"), (4, "append"), (7, "torn")]:
    out = tmp_path / f"killed_{where}"
    kill_at(n, where)
    with pytest.raises(_Killed):
      run.generate(config, _options(out, models[0]), backend=tiny_backend)
    monkeypatch.setattr(writer, "write_atomic", real_write)
    monkeypatch.setattr(writer.MetadataLog, "append", real_append)
    half = _tree(out)
    pngs = [f for f in half if f.endswith(".png")]
    assert len(pngs) == n + (where != "write")
    for f in pngs:  # whatever is there is a whole image, identical to the uninterrupted one
      assert half[f] == expected[f]
    files_with_lines = [m["file"] for m in _metadata(out)] if where != "torn" else []
    assert all(f in pngs for f in files_with_lines)
    run.generate(config, _options(out, models[0]), backend=tiny_backend)
    assert _tree(out) == expected, where


def test_rerun_skips_existing_images_and_refuses_other_settings(tiny_backend, models, tmp_path):
  config = digits_config.get_config().data
  out = tmp_path / "syn"
  run.generate(config, _options(out, models[0], images_per_class=2), backend=tiny_backend)
  calls = []
  real = tiny_backend.generate

  class Counting:
    batch_size, seeded = tiny_backend.batch_size, True
    describe = tiny_backend.describe

    def generate(self, prompt, seeds, names):
      calls.append(list(names))
      return real(prompt, seeds, names)

  summary = run.generate(config, _options(out, models[0], images_per_class=2), backend=Counting())
  assert calls == [] and all(row["made"] == 0 for row in summary.values())
  # More images per class only adds images; the folder equals a fresh run with that many.
  run.generate(config, _options(out, models[0]), backend=Counting())
  # Images 2 (prompt 2's first) and 3 (prompt 0's second) are new; prompt 0's batch (its
  # images 0-1) is made again whole.
  assert calls == sum(
    ([[f"{c}/0000_0000.png", f"{c}/0000_0001.png"], [f"{c}/0002_0000.png"]] for c in CLASSES), []
  )
  fresh = tmp_path / "fresh"
  run.generate(config, _options(fresh, models[0]), backend=tiny_backend)
  assert _tree(out) == _tree(fresh)
  with pytest.raises(ConfigError, match="guidance_scale=2.0.*guidance_scale=3.0"):
    options = _options(out, models[0], guidance_scale=3.0)
    other = backends.DiffusersBackend(
      models[0], guidance_scale=3.0, num_inference_steps=STEPS, image_size=SIZE, batch_size=2
    )
    run.generate(config, options, backend=other)


def test_zero_shot_filter_keeps_images_clip_recognises(tiny_backend, models, tmp_path):
  import torch
  import transformers

  config = digits_config.get_config().data
  out = tmp_path / "syn"
  options = _options(out, models[0], images_per_class=6, filter_model=models[1])
  summary = run.generate(config, options, backend=tiny_backend)
  lines = _metadata(out)
  assert len(lines) == 18
  # Independent check: CLIP features of the saved PNGs and the 10 class prompts, softmax in
  # float64 numpy.
  clip = transformers.CLIPModel.from_pretrained(models[1])
  processor = transformers.CLIPProcessor.from_pretrained(models[1])
  texts = [prompts.TEMPLATES["digits"][0].format(d) for d in DIGITS]
  images = [Image.open(out / m["file"]).convert("RGB") for m in lines]
  with torch.no_grad():
    t = clip.get_text_features(**processor(text=texts, padding=True, return_tensors="pt"))
    v = clip.get_image_features(**processor(images=images, return_tensors="pt"))
  t = getattr(t, "pooler_output", t).double().numpy()
  v = getattr(v, "pooler_output", v).double().numpy()
  t /= np.linalg.norm(t, axis=1, keepdims=True)
  v /= np.linalg.norm(v, axis=1, keepdims=True)
  logits = float(clip.logit_scale.exp()) * v @ t.T
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  expected = p[np.arange(len(lines)), [int(m["class"]) for m in lines]]
  np.testing.assert_allclose([m["filter_prob"] for m in lines], expected, rtol=1e-4)
  for m, prob in zip(lines, expected, strict=True):
    assert m["kept"] == (prob > 0.1)
    assert m["file"].startswith(".rejected/") != m["kept"]
  for c in CLASSES:
    kept = sum(m["kept"] for m in lines if m["class"] == c)
    assert summary[c]["kept"] == kept and summary[c]["kept_share"] == kept / 6
  kept_files = sorted(m["file"] for m in lines if m["kept"])
  assert 0 < len(kept_files) < 18  # the tiny random CLIP rejects some and keeps some
  syn = data.load_synthetic(str(out), DIGITS, image_size=16)
  assert sorted(syn.files) == kept_files


# --- the images API, faked on 127.0.0.1 ---


def _png(color) -> bytes:
  buffer = io.BytesIO()
  Image.new("RGB", (24, 24), color).save(buffer, format="PNG")
  return buffer.getvalue()


class FakeImagesAPI(http.server.ThreadingHTTPServer):
  """Serves POST /v1/images/generations; `script` lists what the next requests get:
  'ok', 'timeout' (no answer until the test ends, so the client's timeout always fires), 429,
  500, 401, 'garbage', 'no_image'. With gather=n the first requests are held until n of them
  are in flight at once: concurrency shown by events, not by timing."""

  def __init__(self, script, gather=0):
    self.script = list(script)
    self.requests = []
    self.in_flight = self.most_in_flight = 0
    self.lock = threading.Lock()
    self.gathered = threading.Event()
    if gather <= 1:
      self.gathered.set()
    self.gather = gather
    self.released = threading.Event()  # set when the test ends
    super().__init__(("127.0.0.1", 0), _Handler)

  @property
  def url(self):
    return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(http.server.BaseHTTPRequestHandler):
  def log_message(self, *args):
    pass

  def do_POST(self):
    server = self.server
    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
    with server.lock:
      server.requests.append((self.path, self.headers["Authorization"], body))
      action = server.script.pop(0) if server.script else "ok"
      server.in_flight += 1
      server.most_in_flight = max(server.most_in_flight, server.in_flight)
      if server.in_flight >= server.gather:
        server.gathered.set()
    # A client that never sends them together would wait here (the cap only ends the test).
    server.gathered.wait(timeout=60)
    with server.lock:
      server.in_flight -= 1
    if action == "timeout":
      server.released.wait(timeout=60)  # past the client's 0.2 s, however slow the machine
      action = "ok"
    if isinstance(action, int):
      payload = json.dumps({"error": {"message": f"status {action}"}}).encode()
      self.send_response(action)
      if action == 429:
        self.send_header("Retry-After", "0.01")
    else:
      image = _png((len(server.requests) * 40 % 256, 0, 0))
      item = {
        "ok": {"b64_json": base64.b64encode(image).decode()},
        "garbage": None,
        "no_image": {"b64_json": base64.b64encode(b"not a png").decode()},
      }[action]
      payload = b"<html>oops" if action == "garbage" else json.dumps({"data": [item]}).encode()
      self.send_response(200)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(payload)))
    self.end_headers()
    try:
      self.wfile.write(payload)
    except (BrokenPipeError, ConnectionResetError):
      pass  # the client timed out and left


@pytest.fixture
def fake_api():
  servers = []

  def start(script, gather=0):
    server = FakeImagesAPI(script, gather)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    servers.append(server)
    return server

  yield start
  for server in servers:
    server.released.set()
    server.shutdown()
    server.server_close()


def _openai(server, sleeps, **kw):
  args = dict(
    api_key="sk-test",
    api_base=server.url,
    size="256x256",
    quality=None,
    image_size=16,
    timeout=0.2,
    max_retries=4,
    retry_delay=0.5,
    sleep=sleeps.append,
  )
  return backends.OpenAIBackend("dall-e-2", **{**args, **kw})


def test_openai_backend_retries_then_writes(fake_api, tmp_path):
  server = fake_api(["timeout", 429, 500, "garbage", "ok", "no_image", "ok"])
  sleeps = []
  out = tmp_path / "syn"
  options = _options(out, "dall-e-2", backend="openai", images_per_class=2, classes=("7",))
  summary = run.generate(digits_config.get_config().data, options, backend=_openai(server, sleeps))
  # Image 1: timeout, 429 (Retry-After 0.01), 500, garbage, then ok; image 2: bad PNG, then ok.
  assert sleeps == [0.5, 0.01, 2.0, 4.0, 0.5]
  assert len(server.requests) == 7
  path, auth, body = server.requests[0]
  assert path == "/v1/images/generations" and auth == "Bearer sk-test"
  assert body == {
    "model": "dall-e-2",
    "prompt": "a photo of the handwritten digit 7.",
    "n": 1,
    "size": "256x256",
    "response_format": "b64_json",
  }
  lines = _metadata(out)
  assert [m["file"] for m in lines] == ["7/0000_0000.png", "7/0001_0000.png"]
  assert all(m["seed"] is None and m["backend"] == "openai" for m in lines)
  with Image.open(out / "7/0000_0000.png") as img:
    assert img.size == (16, 16) and img.getpixel((3, 3)) == (200, 0, 0)  # 5th answer, resized
  assert summary["7"]["made"] == 2


def test_openai_backend_gives_up_naming_the_image(fake_api, tmp_path):
  server = fake_api([500] * 3 + [401])
  sleeps = []
  config = digits_config.get_config().data
  out = tmp_path / "syn"
  options = _options(out, "dall-e-2", backend="openai", images_per_class=1, classes=("3",))
  with pytest.raises(UserError, match=r"image '3/0000_0000.png'.*after 3 attempts.*HTTP 500"):
    run.generate(config, options, backend=_openai(server, sleeps, max_retries=2))
  assert sleeps == [0.5, 1.0] and not os.path.exists(out / "3")
  with pytest.raises(UserError, match=r"image '3/0000_0000.png'.*refused: HTTP 401"):
    run.generate(config, options, backend=_openai(server, sleeps, max_retries=2))
  assert len(server.requests) == 4  # a refused key is not retried


def test_openai_requests_run_concurrently_and_land_in_plan_order(fake_api, tmp_path):
  server = fake_api([500, 429], gather=2)
  sleeps = []
  out = tmp_path / "syn"
  options = _options(out, "dall-e-2", backend="openai", images_per_class=3, workers=4)
  run.generate(digits_config.get_config().data, options, backend=_openai(server, sleeps))
  assert server.most_in_flight > 1 and len(server.requests) == 11  # 9 images, 2 retried
  plan = [f"{c}/{p:04d}_0000.png" for c in CLASSES for p in range(3)]
  assert [m["file"] for m in _metadata(out)] == plan
  assert sorted(f for f in _tree(out) if f.endswith(".png")) == sorted(plan)


# --- bad input: one line, exit 2 ---


def test_missing_api_key_is_one_line_and_exit_2(tmp_path, monkeypatch):
  monkeypatch.delenv("OPENAI_API_KEY", raising=False)
  r = run_cli(
    "syncon_jax.tools.generate",
    "--config=configs/digits.py",
    f"--out={tmp_path / 'syn'}",
    "--backend=openai",
    "--model=dall-e-3",
  )
  assert r.returncode == 2, r.stderr[-2000:]
  assert r.stderr.strip().splitlines()[-1] == (
    "error: --backend=openai needs an API key in the environment variable OPENAI_API_KEY."
  )
  assert "Traceback" not in r.stderr and not os.path.exists(tmp_path / "syn")


def test_bad_input_is_a_user_error(models, tiny_backend, tmp_path, monkeypatch):
  config = digits_config.get_config().data
  out = tmp_path / "syn"
  with pytest.raises(DataError, match=r"Unknown class '11'.*nearest: '1'"):
    run.generate(config, _options(out, models[0], classes=("11",)), backend=tiny_backend)
  bad = digits_config.get_config().data
  bad.name = "flowers"
  with pytest.raises(ConfigError, match=r"Unknown data.name 'flowers'; valid: .*oxford_flowers102"):
    run.generate(bad, _options(out, models[0]), backend=tiny_backend)
  broken = tmp_path / "broken_model"
  broken.mkdir()
  (broken / "model_index.json").write_text("{not json")
  with pytest.raises(UserError, match="Cannot load --model .*broken_model"):
    run.generate(config, _options(out, str(broken)))
  with pytest.raises(ConfigError, match="is not a folder"):
    run.generate(config, _options(out, str(tmp_path / "absent")))
  with pytest.raises(UserError, match="Cannot load --filter_model"):
    run.generate(config, _options(out, models[0], filter_model=models[0]), backend=tiny_backend)
  assert not os.path.exists(out)  # nothing written before the inputs were checked

  # A full disk at the 3rd image: a one-line error naming the file, the first two kept, no
  # temporary file left behind; the rerun completes.
  real_replace = os.replace
  count = {"n": 0}

  def replace(src, dst):
    count["n"] += 1
    if count["n"] == 3:
      raise OSError(errno.ENOSPC, "No space left on device")
    real_replace(src, dst)

  monkeypatch.setattr(os, "replace", replace)
  with pytest.raises(DataError, match=r"Cannot write .*0/0001_0000.png: the disk is full"):
    run.generate(config, _options(out, models[0]), backend=tiny_backend)
  monkeypatch.setattr(os, "replace", real_replace)
  assert sorted(_tree(out)) == ["0/0000_0000.png", "0/0000_0001.png", "metadata.jsonl"]
  assert [m["file"] for m in _metadata(out)] == ["0/0000_0000.png", "0/0000_0001.png"]
  run.generate(config, _options(out, models[0]), backend=tiny_backend)
  assert len(_metadata(out)) == 12


def test_dry_run_checks_the_inputs_and_writes_nothing(models, tmp_path, capsys, monkeypatch):
  config = digits_config.get_config().data
  out = tmp_path / "syn"
  assert run.generate(config, _options(out, models[0], dry_run=True)) == {}
  assert "Would make 12 of 12 images (3 classes x 4, 0 already there)" in capsys.readouterr().out
  assert not os.path.exists(out)
  with pytest.raises(ConfigError, match="is not a folder"):
    run.generate(config, _options(out, str(tmp_path / "absent"), dry_run=True))
  monkeypatch.delenv("OPENAI_API_KEY", raising=False)
  with pytest.raises(UserError, match="OPENAI_API_KEY"):
    run.generate(config, _options(out, "dall-e-3", backend="openai", dry_run=True))


def test_class_names_are_the_trainers(tmp_path):
  assert (
    classes.from_config(digits_config.get_config().data)
    == data.load_real(digits_config.get_config().data)[2]
  )
  from configs import cifar10, flowers102

  # TFDS's builder knows Flowers-102's names without the data; CIFAR-10 learns them while
  # preparing, so without the data only --classes_file names them.
  config = flowers102.get_config().data
  config.data_dir = str(tmp_path / "tfds")
  names = classes.from_config(config)
  assert len(names) == 102 and names[:2] == ["pink primrose", "hard-leaved pocket orchid"]
  config = cifar10.get_config().data
  config.data_dir = str(tmp_path / "tfds")
  with pytest.raises(DataError, match="--classes_file"):
    classes.from_config(config)
  birdsnap = digits_config.get_config().data
  birdsnap.name = "birdsnap"
  with pytest.raises(UserError, match="--classes_file"):
    classes.from_config(birdsnap)
  (tmp_path / "c.txt").write_text("Black-footed Albatross\n\nF/A-18\n")
  assert classes.from_file(str(tmp_path / "c.txt")) == ["Black-footed Albatross", "F/A-18"]


def test_prompts_and_plan(tmp_path):
  # A '/' cannot be in a folder name; the folder still matches the class.
  assert prompts.folder_name("F/A-18") == "F_A-18"
  assert data.normalize_class_name("F_A-18") == data.normalize_class_name("F/A-18")
  (tmp_path / "d.json").write_text(json.dumps({"pink_primrose": ["with pale pink petals."]}))
  desc = prompts.read_descriptions(str(tmp_path / "d.json"), ["pink primrose", "rose"])
  templates = prompts.TEMPLATES["oxford_flowers102"]
  got = prompts.class_prompts("pink primrose", templates, desc["pink primrose"])
  assert got[0] == "a photo of a pink primrose, a type of flower."
  assert got[-1] == "a photo of a pink primrose, a type of flower, with pale pink petals."
  assert len(got) == len(templates) + 1
  with pytest.raises(DataError, match="'tulip' is not a class"):
    (tmp_path / "e.json").write_text(json.dumps({"tulip": "red"}))
    prompts.read_descriptions(str(tmp_path / "e.json"), ["rose"])
  # Image i uses prompt i mod P; growing images_per_class keeps every earlier image's seed.
  small = prompts.make_plan(["a", "b"], [["p0", "p1", "p2"]] * 2, 4, seed=0)
  large = prompts.make_plan(["a", "b"], [["p0", "p1", "p2"]] * 2, 10, seed=0)
  assert set(small) <= set(large) and len(large) == 20
  assert [t.prompt for t in small[:4]] == ["p0", "p0", "p1", "p2"]
  assert [t.index for t in small[:4]] == [0, 3, 1, 2]
  assert len({t.seed for t in large}) == 20
  assert prompts.make_plan(["a"], [["p0"]], 2, seed=1)[0].seed != small[0].seed
  with pytest.raises(DataError, match="same folder"):
    prompts.check_folders_distinct(["F/A-18", "F_A 18"])
