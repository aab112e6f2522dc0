"""``vqvae report``: the page's parts on tiny real runs, exact codebook numbers, and a render
in headless Chromium (every image loads, no console error), which skips without a browser."""

import base64
import contextlib
import fcntl
import html
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

from vqvae.cli import main
from vqvae.quantize import codebook_perplexity
from vqvae.report.build import codebook_section, evaluation_section
from vqvae.report.sections import Picture, Section
from vqvae.runs import CodeFile

TINY = ["--hidden", "16", "--res-hidden", "8", "--codebook-size", "16", "--code-dim", "4",
        "--batch-size", "8", "--no-progress"]
PRIOR = ["--arch", "transformer", "--width", "32", "--depth", "1", "--max-steps", "2", "--val-every", "2",
         "--no-progress"]


@pytest.fixture(scope="module")
def image_run(tiny_images, tmp_path_factory):
    """A tiny image run validated at steps 2, 4 and 6, with a prior and an evaluation JSON."""
    run = tmp_path_factory.mktemp("runs") / "images"
    assert main(["train", "--data", str(tiny_images), "--out", str(run), *TINY, "--max-steps", "6",
                 "--val-every", "2", "--log-every", "2"]) == 0
    assert main(["train-prior", str(run), *PRIOR]) == 0
    assert main(["evaluate", str(run), "--json", str(run / "eval.json")]) == 0
    return run


def embedded(page: str, mime: str) -> list[bytes]:
    return [base64.b64decode(d) for d in re.findall(rf'src="data:{re.escape(mime)};base64,([^"]+)"', page)]


def headings(page: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(r"<h[23]>([^<]*)</h[23]>", page)]


def test_report_of_an_image_run_has_every_part(image_run, tmp_path, capsys):
    out = tmp_path / "page" / "report.html"
    assert main(["report", str(image_run), "-o", str(out), "--samples-per-class", "3"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    page = out.read_text()
    titles = headings(page)
    for title in ("Configuration", "Training curves", "Codebook", "Code usage on held-out data",
                  "Codes used and dead codes", "Reconstructions over training", "Prior transformer",
                  "Samples from prior transformer", "Evaluations", "eval.json"):
        assert title in titles, title
    # the grids validation wrote, embedded byte for byte
    pngs = embedded(page, "image/png")
    for step in (2, 4, 6):
        assert f"step {step}" in titles
        assert (image_run / "reconstructions" / f"step_{step:07d}.png").read_bytes() in pngs
    # one picture per class of the prior's samples
    samples = page[page.index("Samples from prior transformer"):page.index('id="evaluations"')]
    assert [t for t in headings(samples) if t in ("discs", "stripes")] == ["discs", "stripes"]
    assert all(png.startswith(b"\x89PNG") for png in pngs)
    # the evaluation JSON as a table, value for value
    metrics = json.loads((image_run / "eval.json").read_text())
    assert f"<td>psnr</td><td>{metrics['psnr']:.6g}</td>" in page
    assert f"<td>codes_used</td><td>{metrics['codes_used']}</td>" in page
    # self-contained: nothing is fetched from anywhere
    assert not re.search(r'(src|href)="(?!data:|#)', page)


def test_default_output_is_inside_the_run(image_run, capsys):
    assert main(["report", str(image_run), "--held-out", "5"]) == 0
    assert (image_run / "report.html").exists()
    assert "5 held-out items" in (image_run / "report.html").read_text()


class FakeSource:
    def __init__(self, codes: CodeFile):
        self.codes = codes

    def report_codes(self, run, n, device):
        return CodeFile(self.codes.codes[:n], None, None if self.codes.lengths is None else self.codes.lengths[:n])

    def report_media(self, run, *, device, samples_per_class, seed):
        return []


def test_held_out_code_counts_are_exact(image_run):
    """Rows of different lengths count only their valid codes (−1 padding never counts)."""
    codes = torch.tensor([[3, 3, 5, -1], [0, 3, 15, 5]])
    source = FakeSource(CodeFile(codes, None, torch.tensor([3, 4])))
    config = json.loads((image_run / "config.json").read_text())
    section = codebook_section(image_run, config, [], source, held_out=10, device="cpu")
    table = dict(next(item for item in section.items if item.title == "held-out codes").rows)
    counts = torch.bincount(torch.tensor([3, 3, 5, 0, 3, 15, 5]), minlength=16)
    assert table == {"items encoded": "2", "positions": "7", "codes used": "4 of 16", "dead codes": "12",
                     "perplexity": f"{codebook_perplexity(counts):.2f}"}
    one = codebook_section(image_run, config, [], source, held_out=1, device="cpu")
    assert dict(one.items[-1].rows)["positions"] == "3"


def test_held_out_codes_come_from_the_tokenizer(image_run):
    """The histogram counts the codes that ``vqvae encode --split val`` writes, first rows first."""
    import vqvae
    from vqvae.modalities import modality_of
    from vqvae.modalities.image.evaluation import encode_images, run_data

    modality = modality_of(json.loads((image_run / "config.json").read_text()))
    file = modality.report_codes(image_run, 3, "cpu")
    images = run_data(image_run, split="val").images
    assert len(images) > 3
    assert torch.equal(file.codes, encode_images(vqvae.load(image_run), images[:3]))


def test_evaluations_section_reads_every_json_but_configs(tmp_path):
    run = tmp_path / "run"
    (run / "priors" / "p").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "priors" / "p" / "config.json").write_text("{}")
    (run / "eval.json").write_text(json.dumps({"psnr": 20.5, "nested": {"a": 1}}))
    (run / "priors" / "p" / "samples.json").write_text(json.dumps({"label_accuracy": 0.75}))
    (run / "broken.json").write_text("{")
    (run / "codes").mkdir()
    (run / "codes" / "cache.json").write_text("{}")
    (run / "big.json").write_text(json.dumps({"names": ["x" * 100] * 3000}))
    section = evaluation_section(run)
    tables = {t.title: dict(t.rows) for t in section.items}
    assert tables == {"eval.json": {"psnr": "20.5", "nested.a": "1"},
                      "priors/p/samples.json": {"label_accuracy": "0.75"}}
    assert "broken.json" in section.note and "big.json" in section.note


def test_report_errors_are_clear(image_run, tmp_path, capsys):
    assert main(["report", str(image_run / "priors" / "transformer")]) == 2
    assert "is a prior: report its tokenizer run" in capsys.readouterr().err
    assert main(["report", str(image_run), "--samples-per-class", "0"]) == 2
    assert "--samples-per-class must be at least 1" in capsys.readouterr().err
    assert main(["report", str(image_run), "--held-out", "0"]) == 2
    assert "--held-out must be at least 1" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "error:" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "not a vqvae run directory" in capsys.readouterr().err


# ------------------------------------------------------------------ the page in a real browser


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium on this machine (Debian: apt-get install chromium); CI installs it")


class DevTools:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4 of the browser)."""

    def __init__(self, executable: str, profile: Path):
        to_browser, self._commands = os.pipe()
        self._events, from_browser = os.pipe()

        def wire():  # in the child: the protocol's fixed descriptors, past any collision
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser, from_browser)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--mute-audio", "--no-first-run",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=wire, close_fds=False)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._next, self.events = b"", 0, []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60):
        self._next += 1
        message = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        reply = self._until(lambda m: m.get("id") == self._next, timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        return self._until(lambda m: m.get("method") == method, timeout)

    def _until(self, match, timeout: float) -> dict:
        for message in self.events:
            if match(message):
                self.events.remove(message)
                return message
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._events], [], [], left)[0]:
                    raise TimeoutError("Chromium did not answer in time")
                chunk = os.read(self._events, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            message = json.loads(raw)
            if match(message):
                return message
            self.events.append(message)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.send("Browser.close", timeout=10)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._commands)
        os.close(self._events)


CHECK = """(async () => {
  const audio = [...document.querySelectorAll('audio')];
  await Promise.all(audio.map(a => a.readyState >= 1 || a.error ? null : new Promise(done => {
    a.addEventListener('loadedmetadata', done); a.addEventListener('error', done); setTimeout(done, 10000);
  })));
  const images = [...document.images];
  return {
    images: images.length,
    broken_images: images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt),
    audio: audio.length,
    broken_audio: audio.filter(a => a.error || a.readyState < 1 || !(a.duration > 0)).length,
    height: document.documentElement.scrollHeight,
  };
})()"""


def render_page(page: Path, profile: Path, screenshot: Path | None = None, width: int = 1200) -> dict:
    """Load ``page`` in headless Chromium: image and audio load status, console errors, and
    optionally a full-page screenshot."""
    browser = DevTools(chromium(), profile)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
        browser.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired")
        result = browser.send("Runtime.evaluate", {"expression": CHECK, "awaitPromise": True,
                                                   "returnByValue": True}, session=session)["result"]["value"]
        if screenshot is not None:
            shot = browser.send("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": result["height"], "scale": 1}}, session=session)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        time.sleep(0.5)  # late console messages
        browser.send("Runtime.evaluate", {"expression": "1"}, session=session)
    finally:
        browser.close()
    errors = []
    for event in browser.events:
        params = event.get("params", {})
        if event.get("method") == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
        elif event.get("method") == "Runtime.exceptionThrown":
            errors.append(params["exceptionDetails"].get("text", "exception"))
        elif event.get("method") == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            errors.append(params["entry"].get("text", ""))
    return {**result, "console_errors": errors}


def test_the_browser_check_sees_broken_images_and_console_errors(tmp_path):
    """The check below can fail: a missing image, a corrupt one and a console error are all seen."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
                    '<img alt="missing" src="missing.png"><img alt="corrupt" src="data:image/png;base64,AAAA">'
                    '<script>console.error("planted")</script></body></html>')
    result = render_page(page, tmp_path / "profile")
    assert sorted(result["broken_images"]) == ["corrupt", "missing"]
    assert any("planted" in e for e in result["console_errors"])


def test_the_report_renders_in_chromium(image_run, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", str(image_run), "-o", str(out), "--samples-per-class", "2"]) == 0
    result = render_page(out, tmp_path / "profile", screenshot=tmp_path / "report.png")
    page = out.read_text()
    assert result["images"] == len(embedded(page, "image/png")) >= 8
    assert result["broken_images"] == []
    assert result["console_errors"] == []
    shot = (tmp_path / "report.png").read_bytes()
    assert shot.startswith(b"\x89PNG") and len(shot) > 10_000


# ------------------------------------------------------------------ speech


@pytest.fixture(scope="module")
def speech_run(fsdd_mini, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "speech"
    assert main(["train", "--data", "fsdd", "--data-dir", str(fsdd_mini), "--out", str(run), "--hidden", "16",
                 "--res-hidden", "8", "--codebook-size", "16", "--code-dim", "8", "--decoder-width", "32",
                 "--speaker-dim", "8", "--segment", "512", "--batch-size", "4", "--max-steps", "2",
                 "--val-every", "2", "--log-every", "1", "--no-progress"]) == 0
    assert main(["train-prior", str(run), *PRIOR, "--window", "0.25"]) == 0
    return run


def test_report_of_a_speech_run_plays_in_chromium(speech_run, tmp_path):
    out = tmp_path / "speech.html"
    assert main(["report", str(speech_run), "-o", str(out)]) == 0
    page = out.read_text()
    wavs = embedded(page, "audio/wav")
    assert len(wavs) == 3 * 2 + 10  # three held-out clips and their reconstructions, one sample per digit
    assert all(w[:4] == b"RIFF" and w[8:12] == b"WAVE" for w in wavs)
    for title in ("Reconstructions", "Samples from prior transformer", "Code usage on held-out data"):
        assert title in headings(page)
    result = render_page(out, tmp_path / "profile")
    assert result["audio"] == len(wavs) and result["broken_audio"] == 0
    assert result["images"] == len(embedded(page, "image/png")) and result["broken_images"] == []
    assert result["console_errors"] == []


def test_sections_are_plain_values():
    """A modality builds its sections without the page: anchors are stable ids."""
    section = Section("Samples from prior transformer", [Picture("a", b"\x89PNG")])
    assert section.anchor == "samples-from-prior-transformer"
