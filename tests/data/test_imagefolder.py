"""imagefolder:PATH on tiny PNG/JPEG/BMP files written here, and on ../shared/data when present.

Covers: layout and order, lazy decoding (nothing decoded until asked, only the
chosen files), fits (crop vs stretch known answers, crop_fraction equals
resize-shorter-side-then-centre-crop), class maps, flat folders, errors.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advspatial import distributed
from advspatial.data import classmap, imagefolder, load_dataset
from advspatial.data.imagefolder import LazyImages, load_imagefolder
from advspatial.data.classmap import read_class_map
from advspatial.data.subset import select
from advspatial.errors import ConfigError, DataError

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
IMAGENET_SAMPLE = SHARED_DATA / "imagenet-sample"
CIFAR_JPEG = SHARED_DATA / "cifar10-test-jpeg"


def solid(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"lossless": True} if path.suffix == ".webp" else {}  # lossy WebP would shift the colour
    Image.new("RGB", size, rgb).save(path, **extra)


def write_tsv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def folder(tmp_path) -> Path:
    """Two classes (sorted: 'cat' before 'dog'), files in non-sorted creation order, plus clutter."""
    root = tmp_path / "imgs"
    solid(root / "dog" / "b.png", (0, 0, 255))
    solid(root / "dog" / "a.bmp", (0, 255, 0))
    solid(root / "cat" / "z.PNG", (255, 0, 0))
    solid(root / "cat" / "c.webp", (10, 20, 30))
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    return root


@pytest.fixture
def decodes(monkeypatch) -> list[str]:
    """Names of the files decoded so far (``imagefolder.read_image`` wrapped to record them)."""
    seen: list[str] = []
    real = imagefolder.read_image

    def counting(path, *args, **kwargs):
        seen.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(imagefolder, "read_image", counting)
    return seen


def test_layout_order_and_pixels(folder) -> None:
    ds = load_dataset(f"imagefolder:{folder}", "test")
    assert ds.class_names == ("cat", "dog")
    assert ds.labels.tolist() == [0, 0, 1, 1] and ds.ids.tolist() == [0, 1, 2, 3]
    assert ds.pixels.dtype == torch.uint8 and ds.pixels.shape == (4, 3, 32, 32) and ds.lazy
    # order within class: sorted file names -> cat/c.webp, cat/z.PNG, dog/a.bmp, dog/b.png
    expected = [(10, 20, 30), (255, 0, 0), (0, 255, 0), (0, 0, 255)]
    for i, rgb in enumerate(expected):
        assert ds.pixels[i, :, 16, 16].tolist() == list(rgb)
    torch.testing.assert_close(ds.images()[:, :, 16, 16] * 255, torch.tensor(expected, dtype=torch.float32))
    assert ds.masks is None
    again = load_imagefolder("test", root=folder)
    assert torch.equal(again.images(), ds.images())


def test_grey_and_size(folder) -> None:
    ds = load_imagefolder(root=folder, size=20, channels=1)
    assert ds.pixels.shape == (4, 1, 20, 20) and ds.image_shape == (1, 20, 20)
    # ITU-R 601 luma of pure green: 0.587 * 255 = 149.7 (PIL rounds)
    assert abs(int(ds.pixels[2, 0, 10, 10]) - 150) <= 1


def test_loading_decodes_nothing_and_subsets_decode_only_their_files(folder, decodes) -> None:
    ds = load_imagefolder(root=folder)
    sub = ds.subset([3, 1]).head(1)
    assert decodes == [] and sub.lazy and len(sub) == 1 and sub.ids.tolist() == [3]
    x = sub.images()
    assert decodes == ["b.png"] and x.shape == (1, 3, 32, 32)
    torch.testing.assert_close(x[0, :, 5, 5], torch.tensor([0.0, 0.0, 1.0]))
    decodes.clear()
    sizes = [len(xb) for xb, _, _ in ds.batches(3)]
    assert sizes == [3, 1] and decodes == ["c.webp", "z.PNG", "a.bmp", "b.png"]
    decodes.clear()
    ds.images(torch.tensor([False, True, False, True]))
    assert decodes == ["z.PNG", "b.png"]


def test_lazy_images_behave_like_a_tensor(folder) -> None:
    lazy = load_imagefolder(root=folder, size=6).pixels
    assert isinstance(lazy, LazyImages) and len(lazy) == 4 and lazy.ndim == 4
    full = lazy.decode()
    assert full.dtype == torch.uint8 and full.shape == (4, 3, 6, 6)
    assert torch.equal(lazy[2], full[2]) and torch.equal(lazy[-1], full[3])
    assert torch.equal(lazy[1:3], full[1:3]) and torch.equal(lazy[[3, 0]], full[[3, 0]])
    assert torch.equal(lazy[1:, 0, 2], full[1:, 0, 2]) and torch.equal(lazy[..., 1], full[..., 1])
    assert torch.equal(lazy.select(slice(1, 3)).decode(), full[1:3])
    assert lazy.select(2).shape == (1, 3, 6, 6)
    assert lazy.decode([]).shape == (0, 3, 6, 6)
    assert "4 files" in repr(lazy) and "dog" not in repr(lazy)


def test_square_images_crop_equals_stretch(tmp_path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "k").mkdir()
    for i, side in enumerate((9, 32, 50)):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(tmp_path / "k" / f"{i}.png")
    for size in (7, 32, 64):
        crop = load_imagefolder(root=tmp_path, size=size, fit="crop").images()
        stretch = load_imagefolder(root=tmp_path, size=size, fit="stretch").images()
        assert torch.equal(crop, stretch)
    assert load_imagefolder(root=tmp_path).pixels.fit == "crop"  # the default


def three_stripes(path: Path, width: int, height: int) -> None:
    """Red left quarter, blue middle half, green right quarter (the central square is all blue)."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[:, : width // 4] = (255, 0, 0)
    array[:, width // 4: 3 * width // 4] = (0, 0, 255)
    array[:, 3 * width // 4:] = (0, 255, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_fit_crop_keeps_the_centre_of_a_2_to_1_image(tmp_path) -> None:
    three_stripes(tmp_path / "k" / "x.png", 64, 32)
    crop = load_imagefolder(root=tmp_path, size=8, fit="crop").pixels[0].int()
    assert (crop[2, :, 1:7] == 255).all() and (crop[:2, :, 1:7] == 0).all()  # interior: pure blue
    assert (crop[2] >= 200).all() and (crop[:2] <= 60).all()  # edge columns: only a trace of the cut-off stripes
    stretch = load_imagefolder(root=tmp_path, size=8, fit="stretch").pixels[0].int()
    assert stretch[:, 4, 0].tolist() == [255, 0, 0] and stretch[:, 4, 7].tolist() == [0, 255, 0]
    assert stretch[:, 4, 3].tolist() == [0, 0, 255]


@pytest.mark.parametrize(("width", "height", "size", "fraction"), [(200, 150, 56, 0.875), (90, 160, 32, 0.9)])
def test_crop_fraction_is_resize_shorter_side_then_centre_crop(tmp_path, width, height, size, fraction) -> None:
    """One resampling of the source box matches the two-step ImageNet recipe to within rounding."""
    yy, xx = np.mgrid[0:height, 0:width]
    array = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) % 256], axis=-1).astype(np.uint8)
    (tmp_path / "k").mkdir()
    Image.fromarray(array).save(tmp_path / "k" / "x.png")
    ours = load_imagefolder(root=tmp_path, size=size, crop_fraction=fraction).pixels[0].int()
    short = round(size / fraction)
    scale = short / min(width, height)
    resized = Image.fromarray(array).resize((round(width * scale), round(height * scale)), Image.Resampling.BILINEAR)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    two_step = np.asarray(resized.crop((left, top, left + size, top + size))).transpose(2, 0, 1)
    diff = (ours - torch.from_numpy(two_step.astype(np.int64))).abs()[:2].float()  # the two smooth ramps
    assert float(diff.mean()) < 2.0  # rounding of the two-step crop offset (<1 px); crop_fraction=1 would give 5-7


def test_train_test_subfolders(tmp_path) -> None:
    solid(tmp_path / "train" / "a" / "1.png", (1, 1, 1))
    solid(tmp_path / "train" / "b" / "1.png", (2, 2, 2))
    solid(tmp_path / "train" / "b" / "2.png", (2, 2, 2))
    solid(tmp_path / "test" / "a" / "1.jpg", (250, 250, 250))
    solid(tmp_path / "test" / "b" / "1.jpeg", (250, 250, 250))
    train = load_imagefolder("train", root=tmp_path)
    test = load_imagefolder("test", root=tmp_path)
    assert train.labels.tolist() == [0, 1, 1] and test.labels.tolist() == [0, 1]
    assert train.class_names == test.class_names == ("a", "b")


def test_same_folder_for_both_splits(folder) -> None:
    assert torch.equal(load_imagefolder("train", root=folder).images(), load_imagefolder("test", root=folder).images())


# --------------------------------------------------------------------------- class maps and flat folders


def test_class_map_relabels_folders_and_allows_missing_classes(folder, tmp_path) -> None:
    cmap = write_tsv(tmp_path / "classes.tsv", "# index, folder, name\n0\tdog\tDoggo\n\n1\tbird\n2\tcat\tKitty\n")
    ds = load_dataset(f"imagefolder:{folder}", "test", class_map=cmap, size=8)
    assert ds.class_names == ("Doggo", "bird", "Kitty") and ds.num_classes == 3
    # ordered by label: dog (0) files first, then cat (2)
    assert ds.labels.tolist() == [0, 0, 2, 2]
    assert ds.pixels[0, :, 4, 4].tolist() == [0, 255, 0]  # dog/a.bmp
    assert ds.pixels[2, :, 4, 4].tolist() == [10, 20, 30]  # cat/c.webp


def test_class_folder_missing_from_the_map_is_an_error(folder, tmp_path) -> None:
    cmap = write_tsv(tmp_path / "classes.tsv", "0\tdog\n")
    with pytest.raises(DataError, match=r"class folder\(s\) cat are not in the class map .*classes.tsv"):
        load_imagefolder(root=folder, class_map=cmap)


def test_flat_folder_with_a_class_map(tmp_path) -> None:
    flat = tmp_path / "flat"
    solid(flat / "n02_sea_slug.JPEG", (0, 0, 200), (10, 7))
    solid(flat / "n01_tench.png", (200, 0, 0), (7, 10))
    solid(flat / "n02.jpg", (0, 0, 200))  # no '_': the whole stem is the key
    (flat / "README.txt").write_text("ignored")
    cmap = write_tsv(tmp_path / "classes.tsv", "0\tn00\tnothing\n1\tn01\ttench\n2\tn02\tsea slug\n")
    ds = load_imagefolder(root=flat, class_map=cmap, size=5)
    assert ds.labels.tolist() == [1, 2, 2] and ds.class_names == ("nothing", "tench", "sea slug")
    assert [Path(f).name for f in ds.pixels.files] == ["n01_tench.png", "n02.jpg", "n02_sea_slug.JPEG"]
    assert ds.pixels[0, :, 2, 2].tolist() == [200, 0, 0]


def test_flat_folder_errors(tmp_path) -> None:
    flat = tmp_path / "flat"
    solid(flat / "n01_tench.png", (200, 0, 0))
    with pytest.raises(DataError, match="flat folder.*pass class_map"):
        load_imagefolder(root=flat)
    solid(flat / "n09_unknown.png", (1, 2, 3))
    cmap = write_tsv(tmp_path / "classes.tsv", "0\tn01\ttench\n")
    with pytest.raises(DataError, match=r"n09_unknown.png: key 'n09' .* not in the class map"):
        load_imagefolder(root=flat, class_map=cmap)


def test_gif_and_tiff_files_are_read(tmp_path) -> None:
    solid(tmp_path / "a" / "x.gif", (255, 0, 0))
    solid(tmp_path / "a" / "y.TIFF", (0, 0, 255))
    ds = load_imagefolder(root=tmp_path, size=4)
    assert [Path(f).name for f in ds.pixels.files] == ["x.gif", "y.TIFF"]
    assert ds.pixels[:, :, 2, 2].tolist() == [[255, 0, 0], [0, 0, 255]]


@pytest.fixture
def named_skips(monkeypatch, capsys):
    """The lines written to stderr by a listing, with no folder named earlier in this process."""
    monkeypatch.setattr(distributed, "_NOTED", set())
    return lambda: [line for line in capsys.readouterr().err.splitlines() if "not read" in line]


def test_files_not_read_are_named_once_per_folder(tmp_path, named_skips) -> None:
    root = tmp_path / "imgs"
    solid(root / "cat" / "a.png", (1, 2, 3))
    solid(root / "dog" / "b.png", (1, 2, 3))
    solid(root / "stray.png", (1, 2, 3))  # beside class folders: not read
    (root / "cat" / "notes.txt").write_text("x")
    (root / "dog" / "more").mkdir()  # no recursion
    (root / "dog" / ".DS_Store").write_text("hidden: not named")
    for _ in range(2):
        assert len(load_imagefolder(root=root)) == 2
    lines = named_skips()
    assert len(lines) == 1, lines
    assert f"image folder {root}: 3 file(s) not read (stray.png, cat/notes.txt, dog/more/)" in lines[0]
    assert ".DS_Store" not in lines[0]


def test_a_full_folder_and_its_own_class_map_name_nothing(tmp_path, named_skips) -> None:
    flat = tmp_path / "flat"
    solid(flat / "n01_tench.png", (200, 0, 0))
    cmap = write_tsv(flat / "classes.tsv", "0\tn01\ttench\n")
    assert len(load_imagefolder(root=flat, class_map=cmap)) == 1
    assert named_skips() == []
    for i in range(5):
        (flat / f"n01_{i}.heic").write_text("x")
    assert len(load_imagefolder(root=flat, class_map=cmap)) == 1
    (line,) = named_skips()
    assert "5 file(s) not read (n01_0.heic, n01_1.heic, n01_2.heic and 2 more)" in line


def test_read_class_map_defaults_and_duplicate_display_names(tmp_path) -> None:
    cmap = read_class_map(write_tsv(tmp_path / "c.tsv", "1\tb\tcrane\r\n0\t a \t\n2\tc\tcrane\n"))
    assert cmap.labels == {"a": 0, "b": 1, "c": 2} and cmap.names == ("a", "crane", "crane")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no class lines"),
        ("# only a comment\n\n", "no class lines"),
        ("0\ta\n1\n", r"line 2: expected index<TAB>folder name"),
        ("0\ta\tb\tc\n", r"line 1: expected .* got 4"),
        ("zero\ta\n", r"line 1: index 'zero' is not a non-negative integer"),
        ("-1\ta\n", r"line 1: index '-1'"),
        ("1.5\ta\n", r"line 1: index '1.5'"),
        ("0\ta\n0\tb\n", r"line 2: index 0 repeats line 1"),
        ("0\ta\n#\n1\ta\n", r"line 3: folder name 'a' repeats line 1"),
        ("0\t\tname\n", r"line 1: the folder name is empty"),
        ("0\ta\n2\tc\n", r"indices must cover 0..2 .*missing 1"),
    ],
)
def test_bad_class_maps(tmp_path, folder, text, message) -> None:
    path = write_tsv(tmp_path / "bad.tsv", text)
    with pytest.raises(DataError, match=message):
        read_class_map(path)
    with pytest.raises(DataError, match="bad.tsv"):
        load_imagefolder(root=folder, class_map=path)


def test_errors(tmp_path, folder) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_imagefolder(root=tmp_path / "missing")
    with pytest.raises(DataError, match="class map .*nope.tsv does not exist"):
        load_imagefolder(root=folder, class_map=tmp_path / "nope.tsv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        load_imagefolder(root=tmp_path / "empty")
    (tmp_path / "onlytext" / "cls").mkdir(parents=True)
    (tmp_path / "onlytext" / "cls" / "a.txt").write_text("x")
    with pytest.raises(DataError, match="cls hold no images"):
        load_imagefolder(root=tmp_path / "onlytext")
    broken = folder / "dog" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = load_imagefolder(root=folder)  # lazy: the broken file is only found when decoded
    ds.images([0, 1])
    with pytest.raises(DataError, match="broken.png"):
        ds.images()
    with pytest.raises(DataError, match="broken.png"):
        list(ds.batches(2))


def test_bad_parameters(folder) -> None:
    with pytest.raises(ConfigError, match="imagefolder:PATH"):
        load_imagefolder(root=None)
    with pytest.raises(ConfigError, match="channels"):
        load_imagefolder(root=folder, channels=2)
    with pytest.raises(ConfigError, match="fit"):
        load_imagefolder(root=folder, fit="pad")
    with pytest.raises(ConfigError, match="size"):
        load_imagefolder(root=folder, size=0)
    with pytest.raises(ConfigError, match="size"):
        load_imagefolder(root=folder, size=3.5)
    for fraction in (0, 1.2, "0.9", True):
        with pytest.raises(ConfigError, match="crop_fraction"):
            load_imagefolder(root=folder, crop_fraction=fraction)
    with pytest.raises(ConfigError, match="no option"):
        load_dataset(f"imagefolder:{folder}", classmap="x.tsv")


# --------------------------------------------------------------------------- real data (../shared/data)


@pytest.mark.skipif(not (IMAGENET_SAMPLE / "classes.tsv").is_file(),
                    reason=f"ImageNet sample not found at {IMAGENET_SAMPLE} (shared test data, never committed)")
def test_imagenet_sample_flat_folder_with_its_class_map() -> None:
    start = time.perf_counter()
    ds = load_dataset(f"imagefolder:{IMAGENET_SAMPLE}", "test", size=224, crop_fraction=0.875,
                      class_map=IMAGENET_SAMPLE / "classes.tsv")
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0 and ds.lazy  # listing only (~10 ms)
    assert len(ds) == 250 and ds.num_classes == 1000 and ds.image_shape == (3, 224, 224)
    assert 0 <= int(ds.labels.min()) and int(ds.labels.max()) < 1000 and len(set(ds.labels.tolist())) == 250
    # file n01440764_tench.JPEG <-> class 0 "tench"
    for path, label in zip(ds.pixels.files, ds.labels.tolist(), strict=True):
        assert Path(path).stem.split("_", 1)[1] == ds.class_names[label]
    assert ds.labels[0] == 0 and ds.class_names[0] == "tench"
    x = ds.images([0, 249])
    assert x.shape == (2, 3, 224, 224) and 0 <= float(x.min()) and float(x.max()) <= 1 and float(x.std()) > 0.05


@pytest.mark.skipif(not CIFAR_JPEG.is_dir(),
                    reason=f"CIFAR-10 JPEG test images not found at {CIFAR_JPEG} (shared test data, never committed)")
def test_cifar10_jpeg_folder_loads_lazily_and_stratifies() -> None:
    start = time.perf_counter()
    ds = load_imagefolder(root=CIFAR_JPEG)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0 and ds.lazy  # listing 10,000 files, ~30 ms
    assert len(ds) == 10000 and ds.class_names[:3] == ("airplane", "automobile", "bird")
    assert torch.bincount(ds.labels).tolist() == [1000] * 10
    sub = select(ds, 200, "stratified", seed=0)
    assert torch.bincount(sub.labels, minlength=10).tolist() == [20] * 10
    assert torch.equal(ds.labels[sub.ids], sub.labels)
    x = sub.images(slice(0, 20))
    assert x.shape == (20, 3, 32, 32)
    stretch = load_imagefolder(root=CIFAR_JPEG, fit="stretch").images(sub.ids[:20])
    assert torch.equal(x, stretch)  # square 32x32 files: crop and stretch agree, both are the file's pixels


def test_an_image_above_the_pixel_cap_is_refused_before_decoding(tmp_path, monkeypatch, recwarn) -> None:
    """A 144-MP PNG under Pillow's bomb limit cost ~1 GB and printed a raw DecompressionBombWarning.
    The cap (ADVSPATIAL_MAX_IMAGE_PIXELS, default 50 MP) is checked from the header; here it is lowered so that
    the test image stays small."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (40, 30), (9, 9, 9)).save(tmp_path / name / "x.png")
    Image.new("RGB", (400, 300)).save(tmp_path / "b" / "big.png")
    data = load_imagefolder(root=tmp_path, size=8)
    monkeypatch.setenv("ADVSPATIAL_MAX_IMAGE_PIXELS", "120000")
    data.images(slice(0, len(data)))  # exactly at the cap: decoded
    monkeypatch.setenv("ADVSPATIAL_MAX_IMAGE_PIXELS", "50000")
    with pytest.raises(DataError, match=r"big\.png has 400x300 = 120000 pixels, more than the limit of 50000"):
        data.images(slice(0, len(data)))
    monkeypatch.setenv("ADVSPATIAL_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ConfigError, match="ADVSPATIAL_MAX_IMAGE_PIXELS"):
        data.images(slice(0, 1))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow would warn from 1000 pixels on
    monkeypatch.setenv("ADVSPATIAL_MAX_IMAGE_PIXELS", "2000")
    data.images(slice(0, 1))  # 1200 pixels: under our cap, above Pillow's warning
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
    assert imagefolder.MAX_IMAGE_PIXELS == 50_000_000


def test_checksum_follows_the_bytes_of_the_images_not_their_size_or_time(folder, decodes) -> None:
    """Images overwritten between a kill and a --resume (same names, same size, same time stamp) must change the
    run's image checksum; reading the bytes costs no decoding."""
    import os

    data = load_imagefolder(root=str(folder), size=4)
    before = data.checksum()
    assert data.checksum() == before and decodes == []
    target = folder / "dog" / "b.png"
    stat = target.stat()
    raw = bytearray(target.read_bytes())
    raw[-20] ^= 0xFF  # one byte inside the image data: same size
    target.write_bytes(bytes(raw))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert target.stat().st_size == stat.st_size and target.stat().st_mtime_ns == stat.st_mtime_ns
    assert load_imagefolder(root=str(folder), size=4).checksum() != before
    assert data.subset([0, 1]).checksum() != data.subset([0, 2]).checksum()


def high_depth_images(folder: Path) -> np.ndarray:
    """The same random 8x8 grey values (uint16) saved as 16-bit PNG (I;16), big-endian 16-bit TIFF (I;16B),
    32-bit integer TIFF (I) and float TIFF (F, in [0,1]); returns the values."""
    folder.mkdir(parents=True, exist_ok=True)
    values = (np.random.default_rng(0).random((8, 8)) * 65535).astype(np.uint16)
    Image.fromarray(values).save(folder / "a.png")
    Image.frombytes("I;16B", (8, 8), values.astype(">u2").tobytes()).save(folder / "b.tif")
    Image.fromarray(values.astype(np.int32)).save(folder / "c.tif")
    Image.fromarray((values / 65535).astype(np.float32)).save(folder / "d.tif")
    return values


def test_16_bit_and_float_images_are_decoded_to_their_true_values(tmp_path) -> None:
    """A 16-bit PNG was decoded as a pure white image: Pillow's convert('L'/'RGB') clips I;16 at 255."""
    values = high_depth_images(tmp_path / "cls")
    expected = values / 257  # the same value on the 8-bit scale
    for name, mode in (("a.png", "I;16"), ("b.tif", "I;16B"), ("c.tif", "I"), ("d.tif", "F")):
        with Image.open(tmp_path / "cls" / name) as img:
            assert img.mode == mode
        for channels in (1, 3):
            array = imagefolder.read_image(tmp_path / "cls" / name, 8, channels, "stretch")
            assert array.shape == (channels, 8, 8) and array.dtype == np.uint8
            assert np.abs(array.astype(float) - expected).max() <= 0.5 + 1e-6, (name, channels)
    data = load_imagefolder(root=str(tmp_path), size=4)
    assert 0.2 < float(data.images().mean()) < 0.8  # not white


def test_high_depth_values_outside_their_range_are_one_clear_error(tmp_path) -> None:
    Image.fromarray(np.full((4, 4), 70000, dtype=np.int32)).save(tmp_path / "big.tif")
    Image.fromarray(np.full((4, 4), 3.0, dtype=np.float32)).save(tmp_path / "hot.tif")
    with pytest.raises(DataError, match=r"big\.tif: 32-bit integer values 70000\.\.70000; valid: 0\.\.65535"):
        imagefolder.read_image(tmp_path / "big.tif", 4, 1, "stretch")
    with pytest.raises(DataError, match=r"hot\.tif: floating-point values 3\.\.3; valid: \[0, 1\]"):
        imagefolder.read_image(tmp_path / "hot.tif", 4, 1, "stretch")


def test_class_maps_that_are_not_utf8_huge_or_index_a_billion_are_one_line(tmp_path, monkeypatch) -> None:
    """A latin-1 or binary class map gave UnicodeDecodeError, one line naming index 999999999 allocated toward tens
    of GB (MemoryError or an OOM kill), a map of a few GB was read whole."""
    latin = tmp_path / "latin.tsv"
    latin.write_bytes("0\tcat\n1\tcaf\u00e9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.tsv, line 2: byte 0xe9 is not UTF-8"):
        read_class_map(latin)
    binary = tmp_path / "binary.tsv"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(DataError, match="is not UTF-8"):
        read_class_map(binary)
    sparse = write_tsv(tmp_path / "sparse.tsv", "0\tairplane\n999999999\tzzz\n")
    with pytest.raises(DataError, match=r"cover 0..999999999 .*missing 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, \.\.\."):
        read_class_map(sparse)
    monkeypatch.setattr(classmap, "MAX_CLASS_MAP_BYTES", 10)
    with pytest.raises(DataError, match=r"sparse.tsv is 25 bytes; valid: a text file of at most 10 bytes"):
        read_class_map(sparse)
    bom = write_tsv(tmp_path / "bom.tsv", "\ufeff0\tcat\n1\tdog\n")
    monkeypatch.setattr(classmap, "MAX_CLASS_MAP_BYTES", 1 << 20)
    assert read_class_map(bom).names == ("cat", "dog")
