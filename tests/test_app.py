"""The Gradio app (app.py): its logic without a browser, then the real page in headless Chromium.

The browser tests start ``python app.py`` on a free localhost port, drive the page with Playwright
through Debian's chromium (``bash scripts/install_browser.sh``; never ``playwright install``) and
skip when either is missing, unless ``VMAS_REQUIRE_BROWSER=1`` (CI), where they fail instead.
Screenshots go to ``$VMAS_APP_SCREENSHOTS`` (default ``.cache/test_app``).
"""

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import types
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from vmas_diffusion.errors import InputError, VideoDecodeError
from vmas_diffusion.media import export_to_video_with_audio, load_audio, probe_video

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("vmas_app", ROOT / "app.py")
vmas_app = importlib.util.module_from_spec(_spec)
sys.modules["vmas_app"] = vmas_app  # dataclasses look their module up there
_spec.loader.exec_module(vmas_app)

DEMO = ROOT / "vmas_diffusion" / "assets" / "demo_bikes.mp4"
LDM = "recipes/tiny_ldm.yaml"  # the fastest model: a few diffusion steps of a tiny random DiT
SCREENSHOTS = Path(os.environ.get("VMAS_APP_SCREENSHOTS", ROOT / ".cache" / "test_app"))
LIMITS = vmas_app.AppLimits(max_megabytes=5.0, max_seconds=8.0, max_steps=50)


def _not_a_video(folder: Path) -> Path:
    path = folder / "not_a_video.mp4"
    path.write_text("this is a text file with a video's name\n" * 20)
    return path


def _truncated(folder: Path) -> Path:
    path = folder / "truncated.mp4"
    path.write_bytes(DEMO.read_bytes()[:3000])
    return path


def _long_video(folder: Path, seconds: float = 10.0, fps: float = 5.0) -> Path:
    """A real, decodable video longer than LIMITS.max_seconds (moving gradient, silent track)."""
    t = int(seconds * fps)
    ramp = np.linspace(0, 255, 64, dtype=np.float32)
    frames = np.stack([np.broadcast_to(((ramp + 8 * i) % 256).astype(np.uint8)[None, :, None], (48, 64, 3)) for i in range(t)])
    return Path(export_to_video_with_audio(frames, np.zeros((1, 8000 * int(seconds)), np.float32), 8000,
                                           folder / "long_video.mp4", fps=fps))


def _mpeg4_video(folder: Path, seconds: float = 2.0, fps: int = 10) -> Path:
    """A video in MPEG-4 part 2, a codec browsers do not play."""
    import av

    path = folder / "mpeg4.mp4"
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in range(int(seconds * fps)):
            image = np.full((64, 96, 3), (20 * i) % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


# ---------------------------------------------------------------------------- checks


def test_limits_from_env():
    limits = vmas_app.AppLimits.from_env({"VMAS_APP_MAX_MB": "12.5", "VMAS_APP_MAX_SECONDS": "9", "VMAS_APP_MAX_STEPS": "7"})
    assert (limits.max_megabytes, limits.max_seconds, limits.max_steps) == (12.5, 9.0, 7)
    assert vmas_app.AppLimits.from_env({}) == vmas_app.AppLimits()
    with pytest.raises(InputError, match="VMAS_APP_MAX_MB='lots'"):
        vmas_app.AppLimits.from_env({"VMAS_APP_MAX_MB": "lots"})
    with pytest.raises(InputError, match="VMAS_APP_MAX_STEPS='0' must be positive"):
        vmas_app.AppLimits.from_env({"VMAS_APP_MAX_STEPS": "0"})


def test_check_upload_accepts_the_demo_clip():
    info = vmas_app.check_upload(str(DEMO), LIMITS)
    assert info.duration == pytest.approx(6.0, abs=0.1)
    assert (info.width, info.height) == (320, 136)


@pytest.mark.parametrize(
    "make, error, needles",
    [
        (lambda d: None, InputError, ["no video uploaded"]),
        (lambda d: d / "gone.mp4", VideoDecodeError, ["gone.mp4", "upload it again"]),
        (_not_a_video, VideoDecodeError, ["not_a_video.mp4", "not a video this app can read"]),
        (_truncated, VideoDecodeError, ["truncated.mp4", "not a video this app can read"]),
        (_long_video, InputError, ["long_video.mp4", "lasts 10.0 s", "up to 8 s"]),
    ],
    ids=["none", "missing", "text-file", "truncated", "too-long"],
)
def test_check_upload_refuses_with_a_clear_message(tmp_path, make, error, needles):
    path = make(tmp_path)
    with pytest.raises(error) as info:
        vmas_app.check_upload(None if path is None else str(path), LIMITS)
    for needle in needles:
        assert needle in str(info.value)


def test_check_upload_refuses_a_file_over_the_size_limit(tmp_path):
    big = tmp_path / "big.mp4"
    big.write_bytes(DEMO.read_bytes())
    size_mb = big.stat().st_size / 1e6
    small = vmas_app.AppLimits(max_megabytes=size_mb / 2)
    with pytest.raises(InputError, match=rf"big.mp4 is {size_mb:.1f} MB; this app takes videos up to {small.max_megabytes:g} MB"):
        vmas_app.check_upload(str(big), small)
    assert vmas_app.check_upload(str(big), vmas_app.AppLimits(max_megabytes=size_mb * 2)).duration > 5


def test_check_settings_normalises_and_refuses():
    models = [LDM, "recipes/tiny_ar.yaml"]
    s = vmas_app.check_settings(LDM, "auto", 4.0, 2.5, 7.0, models, LIMITS)
    assert s == vmas_app.Settings(LDM, None, 4, 2.5, 7)
    assert isinstance(s.steps, int) and isinstance(s.seed, int)
    # no guidance, or 0 on the slider: the model's own (the bundled AR's 6, not a generic 3)
    assert vmas_app.check_settings(LDM, "ldm", None, None, None, models, LIMITS) == vmas_app.Settings(LDM, "ldm", 25, None, 0)
    assert vmas_app.check_settings(LDM, "ldm", None, 0, None, models, LIMITS).guidance_scale is None
    bad = [
        (("nope", "auto", 4, 3.0, 0), "unknown model 'nope'"),
        ((LDM, "gan", 4, 3.0, 0), "unknown backend 'gan'"),
        ((LDM, "auto", 51, 3.0, 0), "steps must be a whole number from 1 to 50"),
        ((LDM, "auto", 2.5, 3.0, 0), "steps must be"),
        ((LDM, "auto", 4, float("nan"), 0), "guidance must be 0 .the model's own. or between 1 and 20"),
        ((LDM, "auto", 4, 0.5, 0), "guidance must be"),
        ((LDM, "auto", 4, 3.0, -1), "seed must be"),
    ]
    for args, needle in bad:
        with pytest.raises(InputError, match=needle):
            vmas_app.check_settings(*args, models, LIMITS)


def test_space_requirements_cover_the_package_dependencies():
    import re
    import tomllib

    def names(lines):
        return {re.split(r"[<>=!~\[ ;]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")
                for line in lines if line.strip() and not line.lstrip().startswith(("#", "-"))}

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = names((ROOT / "requirements.txt").read_text().splitlines())
    missing = names(project["dependencies"]) - required
    assert not missing, f"requirements.txt lacks {sorted(missing)} (pyproject.toml dependencies)"
    assert "gradio" in required


# ---------------------------------------------------------------------------- models


def test_app_runs_from_a_plain_checkout(tmp_path):
    """As on a Space: the package is not installed; `python app.py` puts the checkout first on sys.path,
    and vmas_diffusion.pipelines is the top-level pipelines/ folder with no mapping in the app."""
    code = f"""
import importlib.util, sys
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, '__module__', '').startswith('__editable__')]
sys.path_importer_cache.clear()
assert importlib.util.find_spec('vmas_diffusion') is None, 'the package is still importable'
sys.path.insert(0, {str(ROOT)!r})  # what `python app.py` does for the script's folder
spec = importlib.util.spec_from_file_location('space_app', {str(ROOT / 'app.py')!r})
app = importlib.util.module_from_spec(spec); sys.modules['space_app'] = app; spec.loader.exec_module(app)
from vmas_diffusion.pipelines import VideoToMusicPipeline
import vmas_diffusion.pipelines as p
from pathlib import Path
print(Path(p.__file__).resolve(), VideoToMusicPipeline.__name__, app.model_choices()[-2:])
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(ROOT / "pipelines" / "__init__.py"), "VideoToMusicPipeline",
                                   "['recipes/tiny_ldm.yaml',", "'recipes/tiny_ar.yaml']"]


def test_model_choices_offer_the_bundled_model_only_when_its_weights_exist(tmp_path, monkeypatch):
    from vmas_diffusion import defaults

    monkeypatch.setattr(defaults, "ASSETS", tmp_path)  # an install without the bundled weights
    assert vmas_app.model_choices(["extra/folder"]) == ["extra/folder", LDM, "recipes/tiny_ar.yaml"]
    (tmp_path / "vmas-tiny" / "ldm").mkdir(parents=True)
    (tmp_path / "vmas-tiny" / "ldm" / "model_index.json").write_text("{}")
    assert vmas_app.model_choices(["extra/folder", LDM]) == ["vmas-tiny", "extra/folder", LDM, "recipes/tiny_ar.yaml"]


def test_pipeline_cache_keeps_the_recent_ones_and_checks_the_backend():
    loads = []

    def loader(name, backend):
        loads.append((name, backend))
        return types.SimpleNamespace(backend=backend or ("ar" if name.startswith("a") else "ldm"))

    cache = vmas_app.PipelineCache(size=2, loader=loader)
    first = cache.get("a1")
    assert cache.get("a1") is first and cache.get("a1", "ar") is first and loads == [("a1", None)]
    cache.get("l1")
    cache.get("a1")  # a1 is now the most recent, l1 the oldest
    cache.get("l2")  # drops l1
    cache.get("a1")
    cache.get("l1")
    assert [name for name, _ in loads] == ["a1", "l1", "l2", "l1"]
    assert cache.get("l1", "ldm").backend == "ldm"
    with pytest.raises(InputError, match="model a1 has the 'ar' backend, not 'ldm'"):
        cache.get("a1", "ldm")
    # a bundled name loads the asked backend's version
    assert cache.get("vmas-tiny", "ldm").backend == "ldm" and loads[-1] == ("vmas-tiny", "ldm")
    assert cache.get("vmas-tiny", "ar").backend == "ar" and loads[-1] == ("vmas-tiny", "ar")


def test_step_reporter_reports_done_of_the_pipelines_total():
    calls = []
    pipe = types.SimpleNamespace(num_timesteps=3)
    on_step_end = vmas_app.step_reporter(lambda done, total: calls.append((done, total)))
    tensors = {"latents": object()}
    for step in range(3):
        assert on_step_end(pipe, step, 999 - step, tensors) is tensors  # hands the tensors back unchanged
    assert calls == [(1, 3), (2, 3), (3, 3)]


# ---------------------------------------------------------------------------- generation


@pytest.fixture(scope="module")
def pipes():
    return vmas_app.PipelineCache()


def _settings(seed=0, backend="auto"):
    return vmas_app.Settings(LDM, None if backend == "auto" else backend, 3, 3.0, seed)


def test_generate_writes_a_video_with_music_the_audio_and_the_plot(pipes, tmp_path):
    reports = []
    r = vmas_app.generate(str(DEMO), _settings(), pipes, tmp_path, LIMITS, progress=lambda f, d: reports.append((f, d)))
    assert [Path(p).name for p in (r.video_path, r.audio_path, r.plot_path)] == list(vmas_app.OUTPUT_NAMES)

    info = probe_video(r.video_path)
    assert info.has_audio and info.duration == pytest.approx(6.0, abs=0.15)
    sr = pipes.get(LDM).sample_rate
    wav = load_audio(r.audio_path, sr)
    assert wav.shape == (1, 6 * sr) and np.abs(wav).max() > 0
    assert Path(r.plot_path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Path(r.plot_path).stat().st_size > 10_000
    assert "Wrote 6.0 s of music for 6.0 s of video" in r.message and "ldm backend, 3 steps" in r.message

    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    steps = [d for _, d in reports if d.startswith("generating music (ldm)")]
    assert steps and steps[-1].split()[-1].split("/")[0] == steps[-1].split("/")[-1]  # reached done == total
    assert "progress_bar" not in vars(pipes.get(LDM))  # progress came through the step callback, nothing patched


def test_generate_is_seeded(pipes, tmp_path):
    video = _mpeg4_video(tmp_path)  # 2 s keeps three runs cheap, and goes through the H.264 re-encode

    def run(seed, sub):
        (tmp_path / sub).mkdir()
        r = vmas_app.generate(str(video), _settings(seed), pipes, tmp_path / sub, LIMITS)
        assert probe_video(r.video_path).codec == "h264"
        return load_audio(r.audio_path, pipes.get(LDM).sample_rate)

    a, b, c = run(1, "a"), run(1, "b"), run(2, "c")
    assert a.shape[-1] == 2 * pipes.get(LDM).sample_rate
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_handle_request_turns_every_bad_input_into_a_message(pipes, tmp_path):
    kwargs = dict(models=[LDM], pipes=pipes, limits=LIMITS, out_root=tmp_path / "runs")
    cases = [
        ((None, LDM, "auto", 3, 3.0, 0), "no video uploaded"),
        ((str(_not_a_video(tmp_path)), LDM, "auto", 3, 3.0, 0), "not_a_video.mp4 is not a video"),
        ((str(_truncated(tmp_path)), LDM, "auto", 3, 3.0, 0), "truncated.mp4 is not a video"),
        ((str(_long_video(tmp_path)), LDM, "auto", 3, 3.0, 0), "lasts 10.0 s"),
        ((str(DEMO), LDM, "ar", 3, 3.0, 0), "has the 'ldm' backend, not 'ar'"),
        ((str(DEMO), LDM, "auto", 0, 3.0, 0), "steps must be"),
    ]
    for args, needle in cases:
        video, audio, plot, status = vmas_app.handle_request(*args, **kwargs)
        assert (video, audio, plot) == (None, None, None)
        assert status.startswith("**Cannot generate:**") and needle in status, status

    video, audio, plot, status = vmas_app.handle_request(str(DEMO), LDM, "ldm", 2, 3.0, 0, **kwargs)
    assert status.startswith("**Done.**") and probe_video(video).has_audio
    assert Path(audio).is_file() and Path(plot).is_file()


def test_mux_copies_playable_video_and_reencodes_the_rest(tmp_path):
    music = np.sin(np.linspace(0, 2000, 16000 * 6, dtype=np.float32))[None] * 0.3
    copied = probe_video(vmas_app.mux_for_browser(probe_video(DEMO), music, 16000, tmp_path / "copied.mp4"))
    assert (copied.codec, copied.width, copied.height, copied.has_audio) == ("h264", 320, 136, True)

    source = probe_video(_mpeg4_video(tmp_path))
    assert source.codec == "mpeg4"
    out = probe_video(vmas_app.mux_for_browser(source, music[:, : 16000 * 2], 16000, tmp_path / "reencoded.mp4"))
    assert out.codec == "h264" and out.has_audio and (out.width, out.height) == (96, 64)
    assert out.duration == pytest.approx(2.0, abs=0.15)
    big = vmas_app.mux_for_browser(source, music[:, : 16000 * 2], 16000, tmp_path / "small.mp4", max_side=48)
    assert (probe_video(big).width, probe_video(big).height) == (48, 32)  # aspect kept, sides even


def test_new_output_dir_prunes_old_runs(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "music.wav").write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    fresh = vmas_app.new_output_dir(tmp_path, keep_seconds=3600)
    assert fresh.is_dir() and fresh.parent == tmp_path and not old.exists()
    assert vmas_app.new_output_dir(tmp_path, keep_seconds=3600) != fresh


def test_binds_to_localhost_unless_told_otherwise():
    args = vmas_app.parse_args([], environ={})
    assert (args.host, args.port, args.model) == ("127.0.0.1", 7860, [])
    space = vmas_app.parse_args(["--model", "my/folder"], environ={"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "7861"})
    assert (space.host, space.port, space.model) == ("0.0.0.0", 7861, ["my/folder"])


@pytest.mark.slow
def test_handle_request_with_the_ar_backend(tmp_path):
    video, audio, plot, status = vmas_app.handle_request(
        str(DEMO), "recipes/tiny_ar.yaml", "ar", 25, 3.0, 0, models=["recipes/tiny_ar.yaml"],
        pipes=vmas_app.PipelineCache(), limits=LIMITS, out_root=tmp_path,
    )
    assert status.startswith("**Done.**") and "(ar backend, guidance 3" in status, status
    assert probe_video(video).has_audio and Path(audio).is_file() and Path(plot).is_file()


def test_the_page_uses_the_bundled_models_own_guidance_by_default(tmp_path):
    """The slider's 0 is the guidance the bundled default (the LDM) was chosen with (6), as on the command line."""
    video, audio, plot, status = vmas_app.handle_request(
        str(DEMO), "vmas-tiny", "auto", 25, 0.0, 0, models=["vmas-tiny"], pipes=vmas_app.PipelineCache(),
        limits=LIMITS, out_root=tmp_path,
    )
    assert status.startswith("**Done.**") and "(ldm backend, 25 steps, guidance 6" in status, status


def test_build_demo_wires_the_page():
    gr = pytest.importorskip("gradio")
    demo = vmas_app.build_demo([LDM], LIMITS)
    assert isinstance(demo, gr.Blocks)
    ids = {getattr(block, "elem_id", None) for block in demo.blocks.values()}
    assert {"video-in", "model", "steps", "generate", "status", "video-out", "audio-out", "plot-out"} <= ids
    assert demo.title.startswith("vmas-diffusion")


# ---------------------------------------------------------------------------- real browser

CHROMIUM = os.environ.get("VMAS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
# collects every progress text the page shows, however briefly (a poll could miss a fast step)
RECORD_PROGRESS = """
window.__progress = [];
new MutationObserver(() => {
  for (const el of document.querySelectorAll('.progress-level')) {
    const t = el.textContent.trim();
    if (t && window.__progress[window.__progress.length - 1] !== t) window.__progress.push(t);
  }
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


def _need_browser():
    reason = None
    if importlib.util.find_spec("playwright") is None:
        reason = "the playwright package is not installed (pip install playwright; no `playwright install` needed)"
    elif not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        reason = f"no chromium at {CHROMIUM}: run `bash scripts/install_browser.sh` as root"
    if reason is not None:
        if os.environ.get("VMAS_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """``python app.py`` on a free localhost port (stopped after the module)."""
    _need_browser()
    port = _free_port()
    log = tmp_path_factory.mktemp("app") / "app.log"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", VMAS_APP_MAX_SECONDS="8",
               GRADIO_TEMP_DIR=str(tmp_path_factory.mktemp("gradio")))
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port)], cwd=tempfile.gettempdir(),
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not answer on {url} within 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield types.SimpleNamespace(url=url, proc=proc, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="module")
def browser(app_url, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1280, "height": 1100},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser, app_url):
    page = browser.new_page()
    outside = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((app_url.url, "data:", "blob:")) else None)
    page.add_init_script(RECORD_PROGRESS)
    page.goto(app_url.url)
    page.wait_for_selector("#generate", timeout=60_000)
    page.locator("#model input").click()
    page.get_by_role("option", name=LDM).click()
    yield page
    page.close()
    assert outside == [], f"the page reached outside the app: {outside}"


def _generate(page, video: Path, steps: int = 4):
    page.locator("#steps input[type=number]").fill(str(steps))
    page.locator("#steps input[type=number]").press("Enter")
    page.locator("#video-in input[type=file]").set_input_files(str(video))
    page.wait_for_selector("#video-in video, #video-in .error, #video-in [data-testid=video]", timeout=30_000)
    page.locator("#generate").click()


def _shot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def test_browser_bad_uploads_show_a_message(page, app_url, tmp_path):
    for video, needle, shot in [(_not_a_video(tmp_path), "not_a_video.mp4 is not a video", "app_not_a_video.png"),
                                (_long_video(tmp_path), "long_video.mp4 lasts 10.0 s", "app_too_long.png")]:
        _generate(page, video)
        page.wait_for_function(
            "n => document.querySelector('#status').innerText.includes(n)", arg=needle, timeout=60_000
        )
        assert "Cannot generate:" in page.locator("#status").inner_text()
        assert page.locator("#video-out video").count() == 0
        _shot(page, shot)
        page.locator("#video-in button[aria-label='Clear']").click()
    assert app_url.proc.poll() is None  # the server survived
    with urllib.request.urlopen(app_url.url, timeout=5) as response:
        assert response.status == 200

    # the example row loads the bundled clip into the Video box
    page.locator("table tbody tr").last.click()
    page.wait_for_selector("#video-in video", timeout=30_000)
    assert page.locator("#video-in video").get_attribute("src").endswith("/demo_bikes.mp4")


def test_browser_generates_a_video_with_music(page, app_url, tmp_path):
    _generate(page, DEMO, steps=4)
    page.wait_for_selector("#video-out video[src]", timeout=180_000)
    page.wait_for_selector("#plot-out img[src]", timeout=30_000)
    status = page.locator("#status").inner_text()
    assert "Wrote 6.0 s of music for 6.0 s of video" in status and "4 steps" in status, status
    shot = _shot(page, "app_result.png")
    assert shot.stat().st_size > 50_000

    # the progress indicator was fed from the pipeline's own step counter
    progress = page.evaluate("window.__progress")
    assert any(t.startswith("generating music (ldm)") for t in progress), progress

    # download what the page plays and check it: a video with an audio stream, the music, the plot
    src = page.locator("#video-out video").get_attribute("src")
    downloaded = tmp_path / "downloaded.mp4"
    with urllib.request.urlopen(src, timeout=30) as response, open(downloaded, "wb") as out:
        shutil.copyfileobj(response, out)
    info = probe_video(downloaded)
    assert info.has_audio and info.duration == pytest.approx(6.0, abs=0.15)
    assert page.locator("#video-out video").evaluate("v => v.readyState >= 1 && v.duration > 5.5")  # playable here
    assert page.locator("#audio-out").inner_html().count("0:06") >= 1
    plot_src = page.locator("#plot-out img").get_attribute("src")
    with urllib.request.urlopen(plot_src, timeout=30) as response:
        assert response.read(8) == b"\x89PNG\r\n\x1a\n"
