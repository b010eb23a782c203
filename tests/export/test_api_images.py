"""The Python API reads images exactly as `fishertune predict` does, through its loader
(`fishertune.data.image_io.load_rgb`): odd but valid images give the CLI's masks pixel for pixel, and bad
images, arrays, tensors and devices are one-line project errors (issue 25)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from export_helpers import train_run
from PIL import Image

import fishertune
from fishertune.cli.main import main
from fishertune.errors import FisherTuneError, InputError, UsageError


@pytest.fixture(scope="module")
def export(scenes, base_file, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("api_images")
    run = train_run(folder, scenes, "lora", base_file)
    assert main(["export", str(run), "--out", str(folder / "export")]) == 0
    return folder / "export"


@pytest.fixture(scope="module")
def model(export):
    return fishertune.load_pretrained(export)


@pytest.fixture(scope="module")
def scene(scenes) -> np.ndarray:
    """A 32 x 32 street scene of the fog domain as [H, W, 3] uint8."""
    return np.array(Image.open(scenes / "fog" / "images" / "00001.png").convert("RGB"))


def oriented(scene: np.ndarray, orientation: int, path: Path, **save) -> None:
    """`scene` cut to 32 x 24 and saved with an EXIF orientation (6, 8: shown turned a quarter)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(scene[:, :24]).save(path, exif=exif, **save)


def sixteen_bit(scene: np.ndarray, path: Path) -> None:
    """A 16-bit grey PNG whose low byte varies too: clipped or truncated instead of scaled, it differs."""
    grey = scene.mean(2).astype(np.uint16) * 257 + np.arange(32, dtype=np.uint16)[None, :] * 97
    Image.fromarray(grey).save(path)
    assert Image.open(path).mode.startswith("I")


ODD_IMAGES = {  # file name: how it is written from the scene
    "deep.png": sixteen_bit,
    "turned.jpg": lambda scene, path: oriented(scene, 6, path, quality=95),
    "turned_back.png": lambda scene, path: oriented(scene, 8, path),
    "grey.png": lambda scene, path: Image.fromarray(scene[..., 1]).save(path),
    "alpha.png": lambda scene, path: Image.fromarray(np.dstack([scene, scene[..., :1] // 2])).save(path),
    "palette.png": lambda scene, path: Image.fromarray(scene).quantize(16).save(path),
}


@pytest.mark.parametrize("name", ODD_IMAGES)
def test_the_api_gives_the_clis_masks_for_odd_images(name, export, model, scene, tmp_path):
    image = tmp_path / name
    ODD_IMAGES[name](scene, image)
    out = tmp_path / "out"
    assert main(["predict", str(export), str(image), "--out", str(out), "--format", "trainid",
                 "--no-progress"]) == 0
    cli = np.asarray(Image.open(out / f"{image.stem}.png"))
    inputs = {"path": image, "str": str(image), "pil": Image.open(image)}
    if name in ("deep.png", "grey.png", "alpha.png"):  # no orientation to lose: the pixels as an array
        inputs["array"] = np.asarray(Image.open(image))
    for kind, given in inputs.items():
        ids = model.predict(given)
        assert ids.dtype == np.uint8 and ids.shape == cli.shape, (kind, ids.shape, cli.shape)
        np.testing.assert_array_equal(ids, cli, err_msg=kind)


def test_a_float_array_in_0_1_is_the_uint8_image(model, scene):
    floats = scene.astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(model.predict(floats), model.predict(scene))
    tensor = torch.from_numpy(floats).permute(2, 0, 1)
    assert torch.equal(model.predict(tensor), torch.from_numpy(model.predict(scene)).long())


BAD_INPUTS = {  # case: (input, error class, what the line says)
    "float_tensor_in_0_255": (torch.full((3, 8, 8), 255.0), UsageError, "in [0, 1], got values from 255"),
    "float_tensor_below_0": (torch.full((3, 8, 8), -0.5), UsageError, "in [0, 1], got values from -0.5"),
    "nan_tensor": (torch.full((3, 8, 8), float("nan")), UsageError, "NaN or infinite"),
    "inf_batch": (torch.full((2, 3, 8, 8), float("inf")), UsageError, "NaN or infinite"),
    "float_array_in_0_255": (np.full((8, 8, 3), 200.0), UsageError, "in [0, 1], got values from 200"),
    "nan_array": (np.full((8, 8, 3), np.nan, np.float32), UsageError, "NaN or infinite"),
    "empty_tensor": (torch.zeros(3, 0, 8), UsageError, "empty image"),
    "empty_batch": (torch.zeros(0, 3, 8, 8), UsageError, "empty image"),
    "empty_array": (np.zeros((0, 0, 3), np.uint8), UsageError, "empty one [0, 0, 3]"),
    "empty_float_array": (np.zeros((0, 4, 3), np.float32), UsageError, "empty image"),
    "empty_pil": (Image.new("RGB", (0, 0)), UsageError, "empty (0x0 pixels)"),
    "two_channels": (np.zeros((8, 8, 2), np.uint8), UsageError, "got uint8 [8, 8, 2]"),
    "five_channels": (np.zeros((8, 8, 5), np.uint8), UsageError, "got uint8 [8, 8, 5]"),
    "float_array_four_channels": (np.zeros((8, 8, 4), np.float32), UsageError, "[H, W, 3] in [0, 1]"),
    "one_channel_tensor": (torch.zeros(1, 8, 8), UsageError, "got torch.float32 [1, 8, 8]"),
    "integer_tensor": (torch.zeros(3, 8, 8, dtype=torch.uint8), UsageError, "float tensor"),
    "int64_array": (np.zeros((8, 8, 3), np.int64), UsageError, "got int64 [8, 8, 3]"),
    "a_list": ([[0, 1]], UsageError, "not list"),
    "missing_file": ("no/such/street.png", InputError, "cannot read image no/such/street.png"),
    "float_pil": (Image.new("F", (4, 4)), InputError, "floating-point pixels"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=str)
def test_bad_inputs_are_one_line_project_errors(case, model):
    given, kind, message = BAD_INPUTS[case]
    with pytest.raises(kind) as error:
        model.predict(given)
    assert message in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_an_image_over_the_size_limit_is_refused_as_from_the_cli(model, scene, tmp_path):
    from fishertune.data.image_io import set_max_pixels

    Image.fromarray(scene).save(tmp_path / "big.png")
    set_max_pixels(1000)  # the 32 x 32 scene has 1024
    try:
        for given in (tmp_path / "big.png", Image.fromarray(scene), scene):
            with pytest.raises(InputError, match="is 32x32 = 0.00102 megapixels, over the limit of 0.001"):
                model.predict(given)
    finally:
        set_max_pixels(None)


BAD_DEVICES = {"gpu0": (UsageError, "'gpu0' is not a torch device"),
               "meta": (UsageError, "the meta device holds no values"),
               "cuda:99": (InputError, "device 'cuda:99' is not available here")}
if not torch.cuda.is_available():
    BAD_DEVICES["cuda"] = (InputError, "device 'cuda' is not available here")


@pytest.mark.parametrize("device", BAD_DEVICES)
def test_a_device_this_machine_lacks_is_one_line(device, export, model):
    kind, message = BAD_DEVICES[device]
    with pytest.raises(kind, match=message) as error:
        fishertune.load_pretrained(export, device=device)
    assert "\n" not in str(error.value)
    with pytest.raises(kind, match=message):
        model.to(device)
    assert model.device == torch.device("cpu")


def test_an_available_device_loads(export):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = fishertune.load_pretrained(export, device=device)
    assert model.device.type == device
    assert model.predict(np.zeros((8, 8, 3), np.uint8)).shape == (8, 8)


def test_project_errors_are_caught_as_such(model):
    """UsageError is also a ValueError, as Python callers expect of a bad argument."""
    with pytest.raises(ValueError):
        model.predict(torch.full((3, 8, 8), 255.0))
    with pytest.raises(FisherTuneError):
        model.predict("no/such/street.png")
