"""Any model, any images: timm repos, timm:ARCH + weights, nn.Modules, image folders, and the loader's checks.

Models are tiny timm networks saved by timm's own ``save_for_hf`` (nothing of sclzoo in their config); images
are real digits written as PNG files by the tests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from helpers import png_folder, timm_repo
from PIL import Image
from safetensors.torch import save_file
from timm.data import create_transform, resolve_data_config
from torch import nn

import sclzoo
from sclzoo.errors import ConfigError, DatasetError, ModelLoadError
from sclzoo.evaluator.api import evaluate
from sclzoo.evaluator.attributions import gradcam_layer_name
from sclzoo.evaluator.cli import main
from sclzoo.zoo.data import load_dataset
from sclzoo.zoo.hub import load_model, resolve_model

FAST = {"n_samples": 4, "methods": ["saliency"], "metrics": ["sparseness"], "progress": False}


def _edit(repo: Path, fn: Any) -> None:
    cfg = json.loads((repo / "config.json").read_text())
    fn(cfg)
    (repo / "config.json").write_text(json.dumps(cfg))


@pytest.fixture(scope="module")
def r18(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """timm's test_resnet, 10 classes, 32×32, ImageNet mean/std, bicubic, crop_pct 0.875 (a non-trivial cfg)."""
    return timm_repo(tmp_path_factory.mktemp("r") / "repo", data_config={
        "input_size": (3, 32, 32), "crop_pct": 0.875, "interpolation": "bicubic",
        "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)})


# ------------------------------------------------------------------------------------------------ model sources
def test_timm_repo_logits_equal_timms_own_pipeline(r18: Path, tmp_path: Path) -> None:
    folder = png_folder(tmp_path / "imgs", mode="RGB", size=40)
    loaded = load_model(resolve_model(str(r18)))
    assert loaded.data_config is not None and loaded.data_config.crop_pct == 0.875
    data = load_dataset(f"imagefolder:{folder}", "all", prep=loaded.data_config)
    ours = loaded.model(data.images)
    ref_model = timm.create_model("test_resnet", num_classes=10, pretrained=False)
    from safetensors.torch import load_file

    ref_model.load_state_dict(load_file(str(r18 / "model.safetensors")))
    cfg = json.loads((r18 / "config.json").read_text())
    t = create_transform(**resolve_data_config(args={}, pretrained_cfg=cfg["pretrained_cfg"]), is_training=False)
    files = sorted(folder.rglob("*.png"))
    with torch.no_grad():
        ref = ref_model.eval()(torch.stack([t(Image.open(f).convert("RGB")) for f in files]))
    assert data.images.shape[1:] == (3, 32, 32) and float(data.images.min()) >= 0 and float(data.images.max()) <= 1
    assert torch.allclose(ours, ref, atol=1e-5), float((ours - ref).abs().max())


def test_timm_arch_with_weights_file_and_python_module(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = timm.create_model("test_resnet", num_classes=3, in_chans=1, pretrained=False).eval()
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    folder = png_folder(tmp_path / "imgs")
    cfg = {**FAST, "dataset": f"imagefolder:{folder}", "preset": None}
    res = evaluate("timm:test_resnet", weights=tmp_path / "w.safetensors", num_classes=3, in_chans=1,
                   model_id="me/tr", out=tmp_path / "out", preprocess={"input_size": [1, 32, 32]}, **cfg)
    assert res.data["model"]["source"] == "timm" and res.data["model"]["id"] == "me/tr"
    assert res.data["accuracy"]["torch"]["value"] is not None
    # the same network as an nn.Module with a tensor dataset: its commit is a content hash of its state_dict
    x = load_dataset(f"imagefolder:{folder}", "all").images[:, :1]
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    res2 = sclzoo.evaluate(model=net, data=(x, y, ["0", "1", "2"]), model_id="me/my-net", out=tmp_path / "o2",
                           preprocess={"input_size": [1, 32, 32]}, **{k: v for k, v in FAST.items()})
    assert res2.data["model"]["source"] == "python" and len(res2.data["model"]["commit_sha"]) == 40
    assert res2.data["dataset"]["id"].startswith("tensors@sha256:")
    assert res2.path is not None and res2.path.is_file()


def test_module_whose_output_is_not_logits_is_refused(tmp_path: Path) -> None:
    class Features(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1)

    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ModelLoadError, match=r"returns \[2, 1, 1, 1\] for 2 images, not \(N, classes\) logits"):
        sclzoo.evaluate(model=Features(), data=(x, y), model_id="me/f", out=None, **FAST)
    with pytest.raises(ConfigError, match="needs model_id='org/name'"):
        sclzoo.evaluate(model=Features(), data=(x, y), out=None, **FAST)


# ------------------------------------------------------------------------------------------------- datasets
def test_same_images_in_two_folders_give_one_config_hash(r18: Path, tmp_path: Path) -> None:
    a = png_folder(tmp_path / "a" / "imgs")
    b = Path(shutil.copytree(a, tmp_path / "elsewhere" / "copy"))
    ra = evaluate(str(r18), dataset=f"imagefolder:{a}", out=tmp_path / "oa", **FAST)
    rb = evaluate(str(r18), dataset=f"imagefolder:{b}", out=tmp_path / "ob", **FAST)
    assert ra.data["config_hash"] == rb.data["config_hash"]
    assert str(a) not in json.dumps(ra.data["config"]) and ra.data["dataset"]["id"].startswith("imagefolder@sha256:")
    # grey 20×20 PNGs reached a 3-channel 32×32 model: recorded and part of the config
    pre = ra.data["config"]["preprocess"]
    assert pre["source_size"] == [1, 20, 20] and pre["input_size"] == [3, 32, 32] and pre["crop_pct"] == 0.875
    # the flat folder was evaluated whole; 10-class model, 3 folders, predicted target: accuracy not applicable
    assert ra.data["dataset"]["split"] == "all" and ra.data["dataset"]["n_total"] == 9
    assert ra.data["accuracy"]["torch"]["value"] is None
    assert ra.data["dataset"]["class_names"] == ["0", "1", "2"]


def test_layouts_class_maps_and_mismatches(r18: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "split"
    png_folder(root / "train")
    png_folder(root / "val", per_class=2, mode="RGB", size=36)  # mixed modes and sizes across splits
    res = evaluate(str(r18), dataset=f"imagefolder:{root}", split="val", out=None, **{**FAST, "n_samples": 2})
    assert res.data["dataset"]["split"] == "val" and res.data["dataset"]["n_total"] == 6
    with pytest.raises(DatasetError, match=r"has no 'test' split; use --split train or val"):
        evaluate(str(r18), dataset=f"imagefolder:{root}", split="test", out=None, **FAST)
    flat = png_folder(tmp_path / "flat")
    with pytest.raises(ConfigError, match=r"the model has 10 classes but the dataset has 3 \(0, 1, 2\); pass "
                                          r"--class-map FILE"):
        evaluate(str(r18), dataset=f"imagefolder:{flat}", target="label", out=None, **FAST)
    (tmp_path / "map.json").write_text(json.dumps({"0": 0, "1": 1, "2": 2}))
    code = _cli(["evaluate", "--model", str(r18), "--dataset", f"imagefolder:{flat}", "--class-map",
                 str(tmp_path / "map.json"), "--target", "label", "--n-samples", "3", "--methods", "gradcam",
                 "--metrics", "sparseness", "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 0
    (doc,) = [json.loads(p.read_text()) for p in (tmp_path / "o").rglob("*.json")]
    assert doc["config"]["class_map"] == {"0": 0, "1": 1, "2": 2} and doc["accuracy"]["torch"]["value"] is not None
    assert doc["run"]["gradcam_layer"] == "model.layer4"  # timm's last feature stage, not a conv inside a block


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> int:
    with pytest.raises(SystemExit) as e:
        main(args)
    return int(e.value.code or 0)


@pytest.mark.parametrize(("make", "match"), [
    (lambda r: (r / "empty_class").mkdir(parents=True), r"holds no images"),
    (lambda r: png_folder(r, classes=(4,)), r"has a single class \('4'\); add the other class folders"),
    (lambda r: (png_folder(r), (r / "1" / "zz.png").write_bytes(b"not a png")), r"cannot read image .*zz\.png"),
])
def test_bad_folders_fail_in_one_line_and_write_nothing(r18: Path, tmp_path: Path, make: Any, match: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "imgs"
    make(root)
    code = _cli(["evaluate", "--model", str(r18), "--dataset", f"imagefolder:{root}", "--n-samples", "1",
                 "--methods", "saliency", "--metrics", "sparseness", "--out", str(tmp_path / "o")], capsys)
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and pytest.importorskip("re").search(match, err), err
    assert not (tmp_path / "o").exists()


def test_gradcam_layer_default_and_override(r18: Path) -> None:
    loaded = load_model(resolve_model(str(r18)))
    assert gradcam_layer_name(loaded.model) == "model.layer4"
    assert gradcam_layer_name(loaded.model, "layer3") == "model.layer3"
    with pytest.raises(ConfigError, match=r"has no layer 'layer9'; did you mean"):
        gradcam_layer_name(loaded.model, "layer9")


# ------------------------------------------------------------------------------------- crafted configs (hostile)
@pytest.mark.parametrize(("edit", "match"), [
    (lambda c: c["model_args"].update(checkpoint_path="pytorch_model.bin"),
     r"model_args\.checkpoint_path is not allowed for 'test_resnet'"),
    (lambda c: c.update(architecture="hf-hub:org/x"), r"architecture 'hf-hub:org/x' is not a plain architecture"),
    (lambda c: c.update(architecture="local-dir:../../.."), r"is not a plain architecture name"),
    (lambda c: c.update(architecture="resnet18x"), r"unknown to timm .*did you mean 'resnet18'"),
    (lambda c: c["model_args"].update(pretrained=True), r"model_args\.pretrained is not allowed"),
    (lambda c: c.update(model_args=[1, 2]), r"model_args must be an object, got list"),
    (lambda c: c.update(sclzoo="oops"), r"the sclzoo block must be an object, got 'oops'"),
    (lambda c: c["pretrained_cfg"].update(input_size=[3, 32]), r"input_size must be three integers"),
    (lambda c: c["model_args"].update(in_chans=1), r"model_args\.in_chans=1 but pretrained_cfg\.input_size"),
    (lambda c: c.update(sclzoo={"files_sha256": {"../../etc/passwd": "0" * 64}}), r"not a file inside the repo"),
    (lambda c: c.update(sclzoo={"files_sha256": {"/etc/passwd": "0" * 64}}), r"not a file inside the repo"),
])
def test_crafted_timm_configs_are_refused_before_building(r18: Path, tmp_path: Path, edit: Any, match: str) -> None:
    repo = Path(shutil.copytree(r18, tmp_path / "repo"))
    _edit(repo, edit)
    with pytest.raises(ModelLoadError, match=match):
        load_model(resolve_model(str(repo)))


def test_memory_bomb_is_refused_before_allocation(bundled: dict[str, Path], tmp_path: Path) -> None:
    repo = Path(shutil.copytree(bundled["ce"], tmp_path / "repo"))
    _edit(repo, lambda c: c["model_args"].update(widths=[6000, 6000, 6000]))
    with pytest.raises(ModelLoadError, match=r"model_args\.widths = \[6000, 6000, 6000\] must be a list of 1 to 6 "
                                             r"integers in \[1, 2048\]"):
        load_model(resolve_model(str(repo)))
    _edit(repo, lambda c: c["model_args"].update(widths=[2048, 2048, 2048], layers=[16, 16, 16]))
    import sclzoo.zoo.hub as hub

    old = hub.MAX_PARAMETERS
    hub.MAX_PARAMETERS = 10_000_000
    try:  # built on the meta device: 3.6 G parameters (14.5 GB) were it allocated
        with pytest.raises(ModelLoadError, match=r"has [\d,]{13} parameters and buffers, more than the "
                                                 r"10,000,000"):
            load_model(resolve_model(str(repo)))
    finally:
        hub.MAX_PARAMETERS = old


def test_unverified_onnx_file_is_refused(bundled: dict[str, Path], tmp_path: Path) -> None:
    repo = Path(shutil.copytree(bundled["ce"], tmp_path / "repo"))
    _edit(repo, lambda c: c["sclzoo"]["files_sha256"].pop("onnx/model.onnx"))
    with pytest.raises(ModelLoadError, match=r"onnx/model\.onnx of .* is not listed in config\.json's "
                                             r"files_sha256, so it cannot be verified"):
        evaluate(str(repo), runtime="onnx", out=None, **FAST)
    repo2 = Path(shutil.copytree(bundled["ce"], tmp_path / "repo2"))
    (repo2 / "onnx" / "model.onnx").write_bytes((repo2 / "onnx" / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(ModelLoadError, match=r"onnx/model\.onnx of .* does not match its sha256"):
        evaluate(str(repo2), runtime="onnx", out=None, **FAST)


def test_non_utf8_config_file_is_one_line(bundled: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "eval.toml").write_bytes(b"n_samples = \xff\xfe\n")
    code = _cli(["evaluate", "--model", str(bundled["ce"]), "--config", str(tmp_path / "eval.toml")], capsys)
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "eval.toml" in err, err


def test_transformers_image_classifier_with_its_image_processor(tmp_path: Path) -> None:
    """A tiny randomly initialised transformers ResNet saved by save_pretrained, with a ViT image processor."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3,
                                    num_channels=3)
    net = transformers.ResNetForImageClassification(cfg).eval()
    repo = tmp_path / "hf"
    net.save_pretrained(repo)
    proc = transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6],
                                          image_std=[0.2, 0.25, 0.3])
    proc.save_pretrained(repo)
    folder = png_folder(tmp_path / "imgs", mode="RGB", size=40)
    res = evaluate(str(repo), dataset=f"imagefolder:{folder}", out=tmp_path / "o",
                   **{**FAST, "methods": ["saliency", "gradcam"]})
    assert res.data["model"]["architecture"] == "transformers:ResNetForImageClassification"
    assert res.data["config"]["preprocess"]["input_size"] == [3, 32, 32]
    # logits match transformers' own pipeline (its processor on the same PNGs, then the model)
    loaded = load_model(resolve_model(str(repo)))
    data = load_dataset(f"imagefolder:{folder}", "all", prep=loaded.data_config)
    files = sorted(folder.rglob("*.png"))
    pixel = proc(images=[Image.open(f).convert("RGB") for f in files], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        ref = net(pixel_values=pixel).logits
        ours = loaded.model(data.images)
    # 7e-4 here: the processor resizes through PIL then rescales; timm resizes 8-bit images the same way, but
    # rounds differently (timm-format models match their pipeline to 1e-5, see above)
    assert torch.allclose(ours, ref, atol=2e-3), float((ours - ref).abs().max())
    (repo / "config.json").write_text(json.dumps({**json.loads((repo / "config.json").read_text()),
                                                  "auto_map": {"AutoModel": "x.Y"}}))
    with pytest.raises(ModelLoadError, match=r"names custom code \(auto_map\)"):
        load_model(resolve_model(str(repo)))


def test_mixed_sizes_and_modes_in_one_folder_are_resized(r18: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    root = png_folder(tmp_path / "mixed", size=20, mode="L")
    Image.new("RGBA", (50, 30), (255, 0, 0, 128)).save(root / "1" / "zz_rgba.png")
    Image.new("P", (12, 64)).save(root / "2" / "zz_palette.png")
    loaded = load_model(resolve_model(str(r18)))
    data = load_dataset(f"imagefolder:{root}", "all", prep=loaded.data_config)
    assert tuple(data.images.shape) == (11, 3, 32, 32) and data.label_names == ("0", "1", "2")
    assert _cli(["ls", "datasets", "--json"], capsys) == 0
    assert "imagefolder:PATH" in capsys.readouterr().out


def test_dry_run_resolves_everything_and_predicts_the_hash(r18: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder = png_folder(tmp_path / "imgs")
    args = ["evaluate", "--model", str(r18), "--dataset", f"imagefolder:{folder}", "--n-samples", "4",
            "--methods", "saliency,integrated_gradients", "--metrics", "sparseness,deletion_auc",
            "--out", str(tmp_path / "o"), "--quiet"]
    assert _cli([*args, "--dry-run"], capsys) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["device"] == "cpu" and plan["dataset"]["split"] == "all" and plan["estimate"]["seconds"] > 0
    assert plan["cost"]["explanations"] > 0 and not plan["result"]["exists"] and not (tmp_path / "o").exists()
    assert _cli(args, capsys) == 0
    (doc,) = [json.loads(p.read_text()) for p in (tmp_path / "o").rglob("*.json")]
    assert doc["config_hash"] == plan["config_hash"]
