"""s4mi bundles in a real MONAI Label 0.8.5 server (``.venv-label``, made by ``bash scripts/setup_label.sh``).

Run it from the repository root with the main environment (the servers run in ``.venv-label``)::

    bash scripts/setup_label.sh                                   # once: makes .venv-label
    .venv/bin/python -m pytest -q tests/integration/test_monailabel.py

(``-m integration`` selects the server tests; ``S4MI_LABEL_VENV=<dir>`` names another MONAI Label environment.)
Without ``.venv-label`` the server tests are skipped. Each server test starts ``monailabel start_server`` on
127.0.0.1 with a temporary studies folder of phantom images, talks to it over HTTP only, and stops it by its PID.
No download: the stock ``monaibundle`` app is the one the monailabel wheel ships, bundles come from this repository
with an untrained ``models/model.pt``. The server tests take a few minutes on a CPU.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from s4mi.label import (
    FINAL_TAG,
    PSEUDO_TAG,
    app_warnings,
    missing_weights,
    no_weights_message,
    s4mi_overrides,
    save_pseudo_label,
    write_app,
)
from tests.conftest import BUNDLES, REPO, free_port, subprocess_threads

LABEL_VENV = Path(os.environ.get("S4MI_LABEL_VENV") or REPO / ".venv-label")  # scripts/setup_label.sh makes it
MONAILABEL = LABEL_VENV / "bin" / "monailabel"
needs_monailabel = pytest.mark.skipif(
    not MONAILABEL.is_file(),
    reason=f"MONAI Label environment missing ({MONAILABEL}); make it with: bash scripts/setup_label.sh",
)

POLYP_SEG = "supervised_polyp_segmentation"
MT_POLYP = "mean_teacher_polyp_segmentation"
CXR_CLS = "supervised_cxr_classification"
CT_SEG = "mean_teacher_ct_segmentation"
# image kind (a word of a bundle's folder name) -> phantom and edge length of its one image in the every-bundle test
KINDS = {"cxr": ("cxr", 64), "skin": ("skin", 64), "polyp": ("polyp", 64), "ct": ("ct3d", 24)}
START_TIMEOUT = 180
TRAIN_TIMEOUT = 300


# ---------------------------------------------------------------- helpers


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _copy_bundle(name: str, model_dir: Path) -> Path:
    """Copy a repository bundle (configs, docs, LICENSE; not runs/ or models/) and give it untrained weights."""
    from monai.bundle import ConfigParser

    dst = model_dir / name
    shutil.copytree(BUNDLES / name, dst, ignore=shutil.ignore_patterns("runs", "eval", "models", "__pycache__"))
    (dst / "models").mkdir()
    parser = ConfigParser()
    parser.read_config(str(dst / "configs" / "inference.json"))
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), dst / "models" / "model.pt")
    return dst


def _phantom(name: str, out: Path, n: int, size: int) -> Path:
    from s4mi.data.phantoms import make_phantom

    make_phantom(name, out, n=n, seed=0, image_size=size)
    return out


def _polyp_studies(studies: Path, work: Path, n: int = 8, n_labeled: int = 4) -> list[str]:
    """n polyp PNGs in ``studies`` (the first one cropped to 48x64, to catch a swapped width and height), masks of the
    first ``n_labeled`` in ``studies/labels/final``. Returns the image ids."""
    from PIL import Image

    src = _phantom("polyp", work / "polyp", n=n, size=64)
    final = studies / "labels" / FINAL_TAG
    final.mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(n):
        stem = f"polyp_{i:05d}"
        image, mask = Image.open(src / "images" / f"{stem}.png"), Image.open(src / "masks" / f"{stem}.png")
        if i == 0:
            image, mask = image.crop((0, 0, 64, 48)), mask.crop((0, 0, 64, 48))
        image.save(studies / f"{stem}.png")
        if i < n_labeled:
            mask.save(final / f"{stem}.png")
        ids.append(stem)
    return ids


def _cxr_studies(studies: Path, work: Path, n: int = 8, pool: int = 40) -> dict[str, list[int]]:
    """n cxr PNGs in ``studies``, each with its class label (the phantom datalist's multi-hot vector) written by
    :func:`s4mi.transforms.write_class_label` to ``studies/labels/final/<image id>.png``. Returns id -> vector.

    The n images are the first of ``pool`` phantom images with pairwise different vectors: whichever two MONAI
    Label puts in validation (its split follows the datastore's file order), some class has a positive and a
    negative, so the validation mean AUC is defined."""
    from s4mi.transforms import write_class_label

    src = _phantom("cxr", work / "cxr", n=pool, size=64)
    datalist = json.loads((src / "datalist.json").read_text())
    items = sorted(
        (it for part in ("training", "validation", "test") for it in datalist[part]), key=lambda it: it["image"]
    )
    vectors: dict[str, list[int]] = {}
    for it in items:
        vector = [int(v) for v in it["label"]]
        if vector in vectors.values() or len(vectors) == n:
            continue
        stem = Path(it["image"]).name.removesuffix(".png")
        shutil.copy(src / it["image"], studies / f"{stem}.png")
        write_class_label(vector, studies / "labels" / FINAL_TAG / f"{stem}.png")
        vectors[stem] = vector
    assert len(vectors) == n, f"only {len(vectors)} different label vectors in {pool} cxr phantoms"
    return vectors


def _kind(bundle: str) -> str:
    """The image kind (a key of ``KINDS``) a bundle's folder name names, e.g. ``ct`` for mean_teacher_ct_segmentation."""
    kinds = [k for k in KINDS if k in bundle.split("_")]
    assert len(kinds) == 1, f"{bundle}: its name should name one image kind of {sorted(KINDS)}, not {kinds}"
    return kinds[0]


def _one_image_per_kind(studies: Path, work: Path) -> dict[str, str]:
    """One phantom image of each of ``KINDS`` in ``studies``: cxr (grey PNG), skin (RGB PNG), polyp (RGB PNG cropped to
    48x64 by :func:`_polyp_studies`) and ct (NIfTI cropped to 24x20x16); the crops catch swapped axes. Returns kind ->
    image id."""
    import nibabel as nib

    ids = {"polyp": _polyp_studies(studies, work, n=1, n_labeled=0)[0]}
    for kind in ("cxr", "skin"):
        phantom, size = KINDS[kind]
        src = _phantom(phantom, work / kind, n=1, size=size)
        shutil.copy(src / "images" / f"{phantom}_00000.png", studies / f"{phantom}_00000.png")
        ids[kind] = f"{phantom}_00000"
    phantom, size = KINDS["ct"]
    src = _phantom(phantom, work / "ct", n=1, size=size)
    nib.save(
        nib.load(src / "images" / f"{phantom}_00000.nii.gz").slicer[:, :20, :16], studies / f"{phantom}_00000.nii.gz"
    )
    ids["ct"] = f"{phantom}_00000"
    return ids


def _mtime_md5(path: Path) -> tuple[int, str]:
    return path.stat().st_mtime_ns, _md5(path)


def _stock_app(app: Path) -> Path:
    """A copy of MONAI Label's stock ``monaibundle`` sample app (from the monailabel wheel in .venv-label)."""
    sample = subprocess.run(
        [str(LABEL_VENV / "bin" / "python"), "-m", "s4mi.label", "sample-app", "monaibundle"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    shutil.copytree(sample, app, ignore=shutil.ignore_patterns("__pycache__"))
    return app


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    log: Path
    app: Path
    studies: Path
    _log_fp: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""

    def request(
        self, method: str, path: str, query: dict | None = None, form: dict | None = None, body: Any = None, timeout=300
    ) -> tuple[int, bytes, str]:
        url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data, headers = None, {}
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers.get("Content-Type", "")

    def json(self, method: str, path: str, **kw: Any) -> Any:
        code, data, _ = self.request(method, path, **kw)
        assert code == 200, f"{method} {path} -> {code}: {data[:2000]!r}\n{self.log_text()[-4000:]}"
        return json.loads(data)

    def infer(self, model: str, image: str, output: str = "image", **params: Any) -> tuple[bytes, str]:
        code, data, ctype = self.request(
            "POST", f"/infer/{model}", query={"image": image, "output": output}, form={"params": json.dumps(params)}
        )
        assert code == 200, f"/infer/{model} -> {code}: {data[:2000]!r}\n{self.log_text()[-6000:]}"
        return data, ctype

    def put_label(self, image: str, label: Path, tag: str = FINAL_TAG) -> dict:
        """Upload a label file the way annotation clients do (``PUT /datastore/label``, multipart)."""
        boundary = f"s4mi{time.time_ns()}"
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="label"; filename="{label.name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n".encode()
            + label.read_bytes()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        url = f"{self.url}/datastore/label?" + urllib.parse.urlencode({"image": image, "tag": tag})
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        req = urllib.request.Request(url, data=body, method="PUT", headers=headers)
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 200
            return json.loads(r.read())

    def train(self, model: str, timeout: float = TRAIN_TIMEOUT, **params: Any) -> dict:
        req = {"max_epochs": 1, "val_split": 0.25, "multi_gpu": False, "device": "cpu", **params}
        self.json("POST", f"/train/{model}", body=req)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.json("GET", "/train/")
            if status.get("status") not in ("SUBMITTED", "RUNNING"):
                assert status["status"] == "DONE", f"training failed: {status}\n{self.log_text()[-8000:]}"
                return status
            assert self.proc.poll() is None, f"server died while training\n{self.log_text()[-6000:]}"
            time.sleep(2)
        raise AssertionError(f"training did not finish in {timeout} s\n{self.log_text()[-6000:]}")


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator:
    """Start ``monailabel start_server`` (from .venv-label) and always stop it by its PID."""
    servers: list[Server] = []

    def _start(app: Path, studies: Path, models: list[str], *conf: str) -> Server:
        port = free_port()
        log = tmp_path / f"server-{port}.log"
        env = dict(os.environ)
        env.update(
            PATH=f"{LABEL_VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            # the monailabel script runs `python -m monailabel.main` with the first python on PATH
            MONAILABEL_PYEXE=str(LABEL_VENV / "bin" / "python"),
            VIRTUAL_ENV=str(LABEL_VENV),
            OMP_NUM_THREADS=subprocess_threads(),
            S4MI_CACHE=str(tmp_path / "s4mi_cache"),  # nothing a bundle makes lands in the user's cache
            BUNDLE_DOWNLOAD_SRC="github",
            MONAI_LABEL_SESSION_PATH=str(tmp_path / "sessions"),
            PYTHONUNBUFFERED="1",
        )
        env.pop("PYTHONPATH", None)
        cmd = [
            str(MONAILABEL), "start_server", "--app", str(app), "--studies", str(studies),
            "--conf", "models", ",".join(models), "--conf", "zoo_source", "github", "--conf", "sam2", "false",
            *conf, "--host", "127.0.0.1", "--port", str(port),
        ]  # fmt: skip
        fp = open(log, "w")  # noqa: SIM115  (closed in the finalizer)
        proc = subprocess.Popen(cmd, stdout=fp, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
        server = Server(proc, port, log, app, studies, fp)
        servers.append(server)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"server exited with {proc.returncode}\n{server.log_text()[-6000:]}"
            try:
                code, _, _ = server.request("GET", "/info/", timeout=5)
                if code == 200:
                    return server
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(1)
        raise AssertionError(f"no /info in {START_TIMEOUT} s\n{server.log_text()[-6000:]}")

    try:
        yield _start
    finally:
        for s in servers:
            if s.proc.poll() is None:
                os.killpg(s.proc.pid, signal.SIGTERM)  # the server's PID leads its own group (training children)
                try:
                    s.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(s.proc.pid, signal.SIGKILL)
                    s.proc.wait(timeout=20)
            s._log_fp.close()


def _png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))


# ---------------------------------------------------------------- unit tests (no server)


class FakeDatastore:
    def __init__(self) -> None:
        self.saved: list[tuple] = []
        self.labels: dict[str, dict[str, str]] = {"a": {FINAL_TAG: "a"}, "b": {}}

    def get_labels_by_image_id(self, image_id: str) -> dict[str, str]:
        return self.labels[image_id]

    def save_label(self, image_id: str, path: str, tag: str, info: dict) -> str:
        self.saved.append((image_id, path, tag, info))
        return image_id


def test_save_pseudo_label_tags_and_never_final(tmp_path: Path) -> None:
    f = tmp_path / "b.png"
    f.write_bytes(b"x")
    ds = FakeDatastore()
    assert save_pseudo_label(ds, "b", f, info={"model": "m"}) == "b"
    image_id, path, tag, info = ds.saved[0]
    assert (image_id, path, tag) == ("b", str(f), PSEUDO_TAG)
    assert info["pseudo"] is True and info["source"] == "s4mi" and info["model"] == "m"
    for bad in (FINAL_TAG, "Final", ""):
        with pytest.raises(ValueError, match="final"):
            save_pseudo_label(ds, "b", f, tag=bad)
    assert save_pseudo_label(ds, "a", f, skip_if_final=True) is None
    with pytest.raises(FileNotFoundError):
        save_pseudo_label(ds, "b", tmp_path / "missing.png")
    assert len(ds.saved) == 1


def test_overrides_feed_unlabelled_stream() -> None:
    sup = json.loads((BUNDLES / POLYP_SEG / "configs" / "train.json").read_text())
    semi = json.loads((BUNDLES / MT_POLYP / "configs" / "train.json").read_text())
    base = {"train#trainer#max_epochs": 3, "device": "cpu", "train#dataset#data": [{"image": "x", "label": "y"}]}
    out = s4mi_overrides(sup, "/b", base)
    assert out["max_epochs"] == 3 and out["device"] == torch.device("cpu") and out["resume_ckpt"] == ""
    assert out["output_dir"] == os.path.join("/b", "runs", "monailabel") and "train#unlabeled_dataset#data" not in out
    assert out["ckpt_dir"] == os.path.join("/b", "models") and out["overwrite_model"] is True  # what /infer reads
    out = s4mi_overrides(semi, "/b", base, unlabeled=[{"image": "u1"}, {"image": "u2"}], unlabeled_batch_size=16)
    assert out["train#unlabeled_dataset#data"] == [{"image": "u1"}, {"image": "u2"}]
    assert out["unlabeled_batch_size"] == 2
    with pytest.raises(ValueError, match="no unlabelled image"):
        s4mi_overrides(semi, "/b", base, unlabeled=[])


def test_overrides_start_two_stage_bundles_from_their_model(tmp_path: Path) -> None:
    """An S2MTS2 bundle with a models/model.pt trains on from it in MONAI Label, without its pretraining weights."""
    config = json.loads((BUNDLES / "s2mts2_cxr_classification" / "configs" / "train.json").read_text())
    semi = {"unlabeled": [{"image": "u1"}]}
    assert "pretrained_ckpt" not in s4mi_overrides(config, tmp_path, {}, **semi)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.pt").write_bytes(b"x")
    assert s4mi_overrides(config, tmp_path, {}, **semi)["pretrained_ckpt"] == ""


def _bundle_without_weights(name: str, dst: Path) -> Path:
    """A copy of a repository bundle with no models/ folder at all (as a fresh checkout has)."""
    shutil.copytree(BUNDLES / name, dst / name, ignore=shutil.ignore_patterns("runs", "eval", "models", "__pycache__"))
    return dst / name


def test_missing_weights_are_named(tmp_path: Path) -> None:
    bundle = _bundle_without_weights(POLYP_SEG, tmp_path)
    assert missing_weights(bundle) == bundle / "models" / "model.pt"
    message = no_weights_message(POLYP_SEG, bundle)
    assert str(bundle / "models" / "model.pt") in message and f"POST /train/{POLYP_SEG}" in message
    assert "pretrained.pt" not in message, "a one-stage bundle needs no first stage"
    (bundle / "models").mkdir()
    (bundle / "models" / "model.ts").write_bytes(b"x")
    assert missing_weights(bundle) is None, "MONAI Label infers with a TorchScript model.ts too"
    two = _bundle_without_weights("s2mts2_cxr_classification", tmp_path)
    assert f"{two / 'models' / 'pretrained.pt'}" in no_weights_message(two.name, two), "two stages: name stage 1"


def test_app_command_warns_about_bundles_without_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from s4mi.label.__main__ import main

    bare = _bundle_without_weights(POLYP_SEG, tmp_path / "src")
    with_weights = _copy_bundle(CXR_CLS, tmp_path / "src")
    assert main(["app", str(tmp_path / "app"), "--bundles", str(bare), str(with_weights)]) == 0
    err = capsys.readouterr().err
    copied = tmp_path / "app" / "model" / POLYP_SEG / "models" / "model.pt"
    assert f"warning: s4mi: model {POLYP_SEG!r} has no weights: {copied} not found" in err, err
    assert CXR_CLS not in err
    assert len(app_warnings(tmp_path / "app")) == 1


def test_studies_from_phantoms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A studies folder from phantoms, as docs/monailabel.md lays it out: masks and volumes copied under labels/final
    with their image's id, class vectors written as one-row PNGs, the rest of the images unlabelled."""
    import nibabel as nib
    from PIL import Image

    from s4mi.label.__main__ import main
    from s4mi.label.studies import image_id, studies_from_datalist

    assert image_id("a/ct3d_00001.nii.gz") == ("ct3d_00001", ".nii.gz") and image_id("p.png") == ("p", ".png")
    polyp = _phantom("polyp", tmp_path / "polyp", n=10, size=32)
    assert main(["studies", str(polyp / "datalist.json"), str(tmp_path / "s1"), "--labelled", "3"]) == 0
    assert "10 images, 3 with a final label, 7 unlabelled" in capsys.readouterr().out
    images = sorted(p.name for p in (tmp_path / "s1").glob("*.png"))
    finals = sorted(p.name for p in (tmp_path / "s1" / "labels" / FINAL_TAG).iterdir())
    assert len(images) == 10 and len(finals) == 3 and set(finals) <= set(images)
    first = json.loads((polyp / "datalist.json").read_text())["training"][0]
    assert _md5(tmp_path / "s1" / "labels" / FINAL_TAG / Path(first["label"]).name) == _md5(polyp / first["label"])

    # a split datalist: its unlabeled section's images come in without a label
    split = json.loads((polyp / "datalist.json").read_text())
    split["unlabeled"] = [{"image": it["image"]} for it in split["training"][2:]]
    split["training"] = split["training"][:2]
    (polyp / "split.json").write_text(json.dumps(split))
    assert studies_from_datalist(polyp / "split.json", tmp_path / "s1b") == {"images": 10, "labelled": 2 + 3}
    assert not (tmp_path / "s1b" / "labels" / FINAL_TAG / Path(split["unlabeled"][0]["image"]).name).exists()

    cxr = _phantom("cxr", tmp_path / "cxr", n=6, size=32)
    assert studies_from_datalist(cxr / "datalist.json", tmp_path / "s2") == {"images": 6, "labelled": 6}
    first = json.loads((cxr / "datalist.json").read_text())["training"][0]
    label = tmp_path / "s2" / "labels" / FINAL_TAG / Path(first["image"]).name
    assert np.asarray(Image.open(label)).tolist() == [[int(v) for v in first["label"]]]

    ct = _phantom("ct3d", tmp_path / "ct", n=3, size=16)
    assert studies_from_datalist(ct / "datalist.json", tmp_path / "s3", labelled=1)["labelled"] == 1
    (final,) = (tmp_path / "s3" / "labels" / FINAL_TAG).iterdir()
    assert final.name.endswith(".nii.gz") and (tmp_path / "s3" / final.name).is_file()
    assert nib.load(final).shape == nib.load(tmp_path / "s3" / final.name).shape
    with pytest.raises(ValueError, match="would both be image"):
        studies_from_datalist(cxr / "datalist.json", tmp_path / "s4", sections=("training", "training"))


def test_write_app(tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", [BUNDLES / POLYP_SEG])
    assert "S4miApp" in (app / "main.py").read_text()
    copied = app / "model" / POLYP_SEG
    assert (copied / "configs" / "inference.json").is_file() and not (copied / "runs").exists()


# ---------------------------------------------------------------- servers


@pytest.mark.integration
@needs_monailabel
def test_stock_monaibundle_app(tmp_path: Path, start_server) -> None:
    """The stock monaibundle app: polyp segmentation infers and trains (twice: the second /train is a new run),
    cxr classification and CT segmentation infer."""
    import nibabel as nib
    from PIL import Image

    app = _stock_app(tmp_path / "app")
    for name in (POLYP_SEG, CXR_CLS, CT_SEG):
        _copy_bundle(name, app / "model")
    studies = tmp_path / "studies"
    studies.mkdir()
    _polyp_studies(studies, tmp_path)
    cxr = _phantom("cxr", tmp_path / "cxr", n=1, size=64)
    shutil.copy(cxr / "images" / "cxr_00000.png", studies / "cxr_00000.png")
    ct = _phantom("ct3d", tmp_path / "ct", n=1, size=24)
    shutil.copy(ct / "images" / "ct3d_00000.nii.gz", studies / "ct3d_00000.nii.gz")

    server = start_server(app, studies, [POLYP_SEG, CXR_CLS, CT_SEG])
    info = server.json("GET", "/info/")
    assert info["models"][POLYP_SEG]["type"] == "segmentation" and info["models"][POLYP_SEG]["labels"] == {"polyp": 1}
    assert info["models"][CXR_CLS]["type"] == "classification"
    assert info["models"][CT_SEG]["dimension"] == 3
    assert POLYP_SEG in info["trainers"]
    assert info["datastore"]["total"] == 10 and info["datastore"]["completed"] == 4

    # segmentation: a label of the input's size (48 rows x 64 columns), values in {0, 1}
    data, ctype = server.infer(POLYP_SEG, "polyp_00000")
    label = _png(data)
    assert "image" in ctype or "octet" in ctype
    assert label.shape == (48, 64) and set(np.unique(label)) <= {0, 1}, (label.shape, np.unique(label))
    assert np.asarray(Image.open(studies / "polyp_00000.png")).shape[:2] == label.shape

    # classification: one score per finding
    res = json.loads(server.infer(CXR_CLS, "cxr_00000", output="json")[0])
    assert [p["label"] for p in res["prediction"]] == [
        "nodule", "mass", "effusion", "cardiomegaly", "pneumothorax", "consolidation"
    ]  # fmt: skip
    assert all(0.0 <= p["score"] <= 1.0 for p in res["prediction"])

    # 3D NIfTI: the label has the image's shape and geometry
    data, _ = server.infer(CT_SEG, "ct3d_00000")
    out = tmp_path / "ct_label.nii.gz"
    out.write_bytes(data)
    image, seg = nib.load(studies / "ct3d_00000.nii.gz"), nib.load(out)
    assert seg.shape == image.shape, (seg.shape, image.shape)
    np.testing.assert_allclose(seg.affine, image.affine, atol=1e-4)
    assert set(np.unique(np.asarray(seg.dataobj))) <= set(range(5))

    # training on the datastore's 4 labelled images writes models/model.pt, and the next /infer loads it
    model_pt = app / "model" / POLYP_SEG / "models" / "model.pt"
    before = _md5(model_pt)
    status = server.train(POLYP_SEG)
    assert status["request"]["max_epochs"] == 1
    assert _md5(model_pt) != before, "training did not write models/model.pt"
    log = server.log_text()
    assert "Total Records in Dataset: 4" in log
    n_reload = log.count("Reload model from cache")
    label2 = _png(server.infer(POLYP_SEG, "polyp_00000")[0])
    assert label2.shape == (48, 64)
    assert server.log_text().count("Reload model from cache") == n_reload + 1, "/infer did not load the new weights"
    assert not re.search(r"Restored all variables from \S*runs/resume", log), "the first /train resumed a run"

    # a second /train with the same max_epochs is a new run: the first run's resume checkpoint (1 of 1 epochs done)
    # is set aside as *.pt.finished-<time>, not resumed (resuming a finished run ends at once and writes nothing)
    resume = app / "model" / POLYP_SEG / "runs" / "resume"
    first = sorted(f.name for f in resume.glob("*.pt"))
    assert first, f"the first /train wrote no resume checkpoint in {resume}"
    after1 = _mtime_md5(model_pt)
    n_log = len(server.log_text())
    server.train(POLYP_SEG)
    log2 = server.log_text()[n_log:]
    after2 = _mtime_md5(model_pt)
    resumed = re.search(r"Restored all variables from \S*runs/resume\S*", log2)
    assert not resumed, f"the second /train resumed the finished first run ({resumed[0]})\n{log2[-6000:]}"
    assert "is a finished run (1 of 1 epochs)" in log2, log2[-6000:]
    assert after2[0] != after1[0], "the second /train did not write models/model.pt"
    assert after2[1] != after1[1], "the second /train wrote the same models/model.pt"
    # MONAI's workflows set the trainer's state up front, so ignite logs even a new run as "resuming" from 0
    assert "SupervisedTrainer - INFO - Engine run resuming from iteration 0, epoch 0 until 1 epochs" in log2
    assert "SupervisedTrainer - INFO - Epoch[1] Complete" in log2, log2[-6000:]
    finished = sorted(f.name for f in resume.glob("*.pt.finished-*"))
    assert [re.sub(r"\.finished-\d{8}-\d{6}$", "", f) for f in finished] == first, finished
    assert list(resume.glob("*.pt")), "the second run wrote no resume checkpoint"


@pytest.mark.integration
@needs_monailabel
def test_stock_monaibundle_app_trains_classification(tmp_path: Path, start_server) -> None:
    """The stock monaibundle app trains a classification bundle on class labels in the datastore: one-row PNGs
    written by ``s4mi.transforms.write_class_label`` under ``labels/final``, read back by the bundle's
    ``LoadClassLabeld``. A server of its own: MONAI Label trains a model on every ``final`` label of the datastore,
    so polyp masks and class labels cannot share one."""
    app = _stock_app(tmp_path / "app")
    _copy_bundle(CXR_CLS, app / "model")
    studies = tmp_path / "studies"
    studies.mkdir()
    vectors = _cxr_studies(studies, tmp_path, n=8)
    ids = sorted(vectors)
    upload = tmp_path / f"{ids[-1]}.png"  # the last label goes in through the API, as an annotator's client would
    shutil.move(studies / "labels" / FINAL_TAG / f"{ids[-1]}.png", upload)

    server = start_server(app, studies, [CXR_CLS])
    info = server.json("GET", "/info/")
    assert info["models"][CXR_CLS]["type"] == "classification" and CXR_CLS in info["trainers"]
    assert info["datastore"]["total"] == 8 and info["datastore"]["completed"] == 7
    assert server.put_label(ids[-1], upload)["label"] == ids[-1]
    assert server.json("GET", "/info/")["datastore"]["completed"] == 8
    for i in (ids[0], ids[-1]):
        code, data, _ = server.request("GET", "/datastore/label", query={"label": i, "tag": FINAL_TAG})
        assert code == 200 and _png(data).tolist() == [vectors[i]]

    scores0 = json.loads(server.infer(CXR_CLS, ids[0], output="json")[0])["prediction"]
    model_pt = app / "model" / CXR_CLS / "models" / "model.pt"
    before = _mtime_md5(model_pt)
    status = server.train(CXR_CLS)  # 8 labelled images, val_split 0.25: 6 train, 2 validation
    assert status["request"]["max_epochs"] == 1
    log = server.log_text()
    assert "Total Records in Dataset: 8" in log
    assert "Total Records for Training: 6" in log and "Total Records for Validation: 2" in log
    auc = re.findall(r"val_mean_auc: (\S+)", log)
    assert auc and auc[-1] != "nan", f"validation read no class vectors: {auc}\n{log[-6000:]}"
    after = _mtime_md5(model_pt)
    assert after[0] != before[0] and after[1] != before[1], "training did not write models/model.pt"

    n_reload = log.count("Reload model from cache")
    scores1 = json.loads(server.infer(CXR_CLS, ids[0], output="json")[0])["prediction"]
    assert server.log_text().count("Reload model from cache") == n_reload + 1, "/infer did not load the new weights"
    assert [p["label"] for p in scores1] == [p["label"] for p in scores0]
    assert [p["score"] for p in scores1] != [p["score"] for p in scores0]


@pytest.mark.integration
@needs_monailabel
def test_stock_monaibundle_app_every_bundle(tmp_path: Path, start_server) -> None:
    """Every bundle of ``bundles/`` (found there, so a new one is covered) loads in ONE stock monaibundle server with
    untrained weights, is listed by /info and answers /infer on the datastore image of its kind (cxr, skin, polyp, ct,
    from its name): a segmentation bundle with a label of the image's shape (and, for NIfTI, its affine), a
    classification bundle with one score in [0, 1] per class (``num_classes`` of its inference.json)."""
    import nibabel as nib
    from monai.bundle import ConfigParser

    names = sorted(p.name for p in BUNDLES.iterdir() if (p / "configs" / "inference.json").is_file())
    assert len(names) >= 11, names
    kinds = {name: _kind(name) for name in names}
    app = _stock_app(tmp_path / "app")
    for name in names:
        _copy_bundle(name, app / "model")  # models/model.pt: the state_dict of the network_def of its inference.json
    studies = tmp_path / "studies"
    studies.mkdir()
    images = _one_image_per_kind(studies, tmp_path)

    server = start_server(app, studies, names)
    info = server.json("GET", "/info/")
    assert sorted(set(names) - set(info["models"])) == [], f"/info lists {sorted(info['models'])}"
    assert info["datastore"]["total"] == len(KINDS)

    failures: dict[str, str] = {}
    for name in names:
        kind, image, model = kinds[name], images[kinds[name]], info["models"][name]
        parser = ConfigParser()
        parser.read_config(str(BUNDLES / name / "configs" / "inference.json"))
        num_classes = int(parser.get_parsed_content("num_classes"))
        try:
            assert model["dimension"] == (3 if kind == "ct" else 2), model
            if "classification" in name:
                assert model["type"] == "classification", model
                prediction = json.loads(server.infer(name, image, output="json")[0])["prediction"]
                assert [p["idx"] for p in prediction] == list(range(num_classes)), prediction
                assert [p["label"] for p in prediction] == sorted(model["labels"], key=model["labels"].get), prediction
                assert all(0.0 <= p["score"] <= 1.0 for p in prediction), prediction
            else:
                assert model["type"] == "segmentation", model
                data, _ = server.infer(name, image)
                if kind == "ct":
                    out = tmp_path / f"{name}.nii.gz"
                    out.write_bytes(data)
                    src, seg = nib.load(studies / f"{image}.nii.gz"), nib.load(out)
                    assert seg.shape == src.shape == (24, 20, 16), (seg.shape, src.shape)
                    np.testing.assert_allclose(seg.affine, src.affine, atol=1e-4)
                    values = np.unique(np.asarray(seg.dataobj))
                else:
                    label = _png(data)
                    src_shape = _png((studies / f"{image}.png").read_bytes()).shape[:2]
                    assert label.shape == src_shape, (label.shape, src_shape)
                    values = np.unique(label)
                # one sigmoid channel (online pseudo-labelling) gives a binary mask
                assert set(values.tolist()) <= set(range(max(num_classes, 2))), values
        except AssertionError as e:
            failures[name] = str(e)[:3000]
    assert not failures, "\n\n".join(f"{k}: {v}" for k, v in failures.items()) + "\n" + server.log_text()[-6000:]


@pytest.mark.integration
@needs_monailabel
def test_s4mi_app_semi_supervised(tmp_path: Path, start_server) -> None:
    """The s4mi app: Mean Teacher trains on the datastore's labelled and unlabelled images; pseudo labels go back
    tagged ``pseudo`` and never over an annotator's ``final`` label."""
    app = tmp_path / "app"
    subprocess.run(
        [str(LABEL_VENV / "bin" / "python"), "-m", "s4mi.label", "app", str(app)], check=True, capture_output=True
    )
    _copy_bundle(MT_POLYP, app / "model")
    studies = tmp_path / "studies"
    studies.mkdir()
    ids = _polyp_studies(studies, tmp_path, n=8, n_labeled=4)
    finals = {p.name: _md5(p) for p in (studies / "labels" / FINAL_TAG).iterdir()}

    server = start_server(app, studies, [MT_POLYP])
    info = server.json("GET", "/info/")
    assert info["name"].startswith("s4mi")
    assert info["models"][MT_POLYP]["type"] == "segmentation"
    assert info["trainers"][MT_POLYP]["semi_supervised"] is True

    assert _png(server.infer(MT_POLYP, ids[0])[0]).shape == (48, 64)
    model_pt = app / "model" / MT_POLYP / "models" / "model.pt"
    before = _md5(model_pt)
    server.train(MT_POLYP)
    log = server.log_text()
    assert "s4mi: 4 labelled, 4 unlabelled images" in log, log[-6000:]
    assert _md5(model_pt) != before, "training did not write models/model.pt"
    label = _png(server.infer(MT_POLYP, ids[0])[0])
    assert label.shape == (48, 64)
    assert "Reload model from cache" in server.log_text()

    # no inference may save under the annotators' tag
    code, body, _ = server.request(
        "POST",
        f"/infer/{MT_POLYP}",
        query={"image": ids[1], "output": "json"},
        form={"params": json.dumps({"save_label": True, "label_tag": FINAL_TAG})},
    )
    assert code != 200, body[:500]

    # batch inference writes pseudo labels for the unlabelled images, tagged pseudo
    server.json(
        "POST", f"/batch/infer/{MT_POLYP}", query={"images": "unlabeled", "run_sync": "true"}, body={"device": "cpu"}
    )
    pseudo = studies / "labels" / PSEUDO_TAG
    assert sorted(p.name for p in pseudo.iterdir()) == [f"{i}.png" for i in ids[4:]]
    datastore = server.json("GET", "/datastore/", query={"output": "all"})
    obj = datastore["objects"][ids[5]]["labels"]
    assert PSEUDO_TAG in obj and FINAL_TAG not in obj and obj[PSEUDO_TAG]["info"]["pseudo"] is True
    code, data, _ = server.request("GET", "/datastore/label", query={"label": ids[5], "tag": PSEUDO_TAG})
    assert code == 200 and _png(data).shape == (64, 64)
    assert {p.name: _md5(p) for p in (studies / "labels" / FINAL_TAG).iterdir()} == finals


@pytest.mark.integration
@needs_monailabel
def test_s4mi_app_bundle_without_weights(tmp_path: Path, start_server) -> None:
    """A bundle without models/model.pt: the app says so at start, /infer answers a message naming the file (not a
    bare 500), /train writes the weights and the next /info and /infer use them, without a restart."""
    app = tmp_path / "app"
    src = _bundle_without_weights(POLYP_SEG, tmp_path / "src")
    made = subprocess.run(
        [str(LABEL_VENV / "bin" / "python"), "-m", "s4mi.label", "app", str(app), "--bundles", str(src)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    model_pt = app / "model" / POLYP_SEG / "models" / "model.pt"
    assert f"has no weights: {model_pt} not found" in made.stderr, made.stderr
    studies = tmp_path / "studies"
    studies.mkdir()
    ids = _polyp_studies(studies, tmp_path, n=8, n_labeled=4)

    server = start_server(app, studies, [POLYP_SEG])
    assert f"has no weights: {model_pt} not found" in server.log_text()
    info = server.json("GET", "/info/")
    assert POLYP_SEG not in info["models"] and POLYP_SEG in info["trainers"]
    code, body, _ = server.request(
        "POST", f"/infer/{POLYP_SEG}", query={"image": ids[0], "output": "image"}, form={"params": "{}"}
    )
    assert code == 404, (code, body[:500])
    detail = json.loads(body)["detail"]
    assert f"model {POLYP_SEG!r} has no weights: {model_pt} not found" in detail and "/train/" in detail, detail

    server.train(POLYP_SEG)
    assert model_pt.is_file(), "training did not write models/model.pt"
    label = _png(server.infer(POLYP_SEG, ids[0])[0])
    assert label.shape == (48, 64) and set(np.unique(label)) <= {0, 1}
    assert POLYP_SEG in server.json("GET", "/info/")["models"]
    assert "its weights appeared; no restart needed" in server.log_text()
