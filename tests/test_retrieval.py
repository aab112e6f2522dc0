"""Codes as an index: metrics on hand-made rankings, engines against exact search, the three
representations on synthetic codes, and tiny image and speech runs through the CLI."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import vqvae
from vqvae.cli import main
from vqvae.retrieval import (
    DenseSettings,
    RetrievalError,
    RetrievalItems,
    Settings,
    TokenizerMismatch,
    average_precision_at_k,
    precision_at_k,
)
from vqvae.retrieval import Index as CoreIndex
from vqvae.retrieval.engines import DenseEngine, exact_knn
from vqvae.retrieval.rerank import code_distances, rerank_scores
from vqvae.runs import CodeFile, load_codes

TINY = ["--hidden", "16", "--res-hidden", "8", "--codebook-size", "16", "--code-dim", "4",
        "--batch-size", "8", "--no-progress"]


# ------------------------------------------------------------------ metrics


def test_precision_and_map_on_a_hand_made_ranking():
    database = np.array([0, 0, 1, 1, 2])
    queries = np.array([0, 1])
    ranked = np.array([[0, 2, 1, 3, 4], [4, 2, 3, 0, 1]])
    ranked = np.pad(ranked, ((0, 0), (0, 5)), constant_values=-1)  # a database of 5: ranks 6-10 missing
    # query 0: relevant at ranks 1 and 3 of R=2 -> AP (1 + 2/3) / 2; query 1: ranks 2 and 3 -> (1/2 + 2/3) / 2
    assert precision_at_k(ranked, queries, database, 1) == 0.5
    assert precision_at_k(ranked, queries, database, 10) == pytest.approx(0.2)
    assert average_precision_at_k(ranked, queries, database, 10) == pytest.approx((5 / 6 + 7 / 12) / 2)
    perfect = np.pad(np.array([[0, 1, 2], [2, 3, 0]]), ((0, 0), (0, 7)), constant_values=-1)
    assert average_precision_at_k(perfect, queries, database, 10) == 1.0
    with pytest.raises(RetrievalError, match="at least 10 ranked neighbours"):
        precision_at_k(ranked[:, :5], queries, database, 10)


# ------------------------------------------------------------------ engines and re-ranking


def _clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(32, d))
    x = centres[rng.integers(0, 32, n)] + 0.3 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_the_approximate_index_recalls_the_exact_neighbours():
    database, queries = _clustered(4000, 16, 0), _clustered(100, 16, 1)
    exact = DenseEngine.build(database, DenseSettings(exact_below=10**9))
    assert exact.kind == "flat"
    _, truth = exact.search(queries, 10)
    _, brute = exact_knn(database, queries, 10, "cosine")
    assert (truth == brute).mean() > 0.99  # faiss flat = brute force (ties aside)

    def recall(settings):
        engine = DenseEngine.build(database, settings)
        _, rows = engine.search(queries, 10)
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, truth, strict=True)]), engine.kind

    assert recall(DenseSettings(exact_below=0, nlist=16, nprobe=16)) == (1.0, "ivf-flat")  # every cell: exact
    coarse, _ = recall(DenseSettings(exact_below=0, nlist=16, nprobe=1))
    approximate, _ = recall(DenseSettings(exact_below=0, nlist=16, nprobe=8))
    assert coarse < approximate and approximate >= 0.95
    compressed, kind = recall(DenseSettings(exact_below=0, nlist=16, nprobe=16, pq_bytes=8))
    assert kind == "ivf-pq" and compressed >= 0.5


def test_rerank_scores_are_aligned_code_distances():
    rng = np.random.default_rng(0)
    codebook = rng.normal(size=(6, 3)).astype(np.float32)
    table = code_distances(codebook)
    queries, candidates = rng.integers(0, 6, (2, 4)), rng.integers(0, 6, (2, 3, 4))
    scores = rerank_scores(queries, candidates, table, (2, 2))
    brute = -((codebook[queries][:, None] - codebook[candidates]) ** 2).sum(axis=(2, 3))
    np.testing.assert_allclose(scores, brute, rtol=1e-5, atol=1e-5)
    # shift: a digit moved by one position on its background costs nothing; never more than strict
    moved = rerank_scores(np.array([[0, 5, 0, 0]]), np.array([[[0, 0, 5, 0]]]), table, (1, 4), shift=1)
    strict = rerank_scores(np.array([[0, 5, 0, 0]]), np.array([[[0, 0, 5, 0]]]), table, (1, 4))
    assert moved[0, 0] == 0.0 and strict[0, 0] == pytest.approx(-2 * table[5, 0])
    assert (rerank_scores(queries, candidates, table, (2, 2), shift=1) >= scores - 1e-6).all()
    # time warping: a row against itself, slowed down, costs nothing; padding (-1) is not a code
    row = np.array([[1, 2, 3, -1, -1, -1]])
    stretched = np.array([[[1, 1, 2, 2, 3, 3], [3, 2, 1, -1, -1, -1]]])
    warped = rerank_scores(row, stretched, table, None)
    assert warped[0, 0] == pytest.approx(0.0, abs=1e-6) and warped[0, 1] < -0.1


# ------------------------------------------------------------------ representations on synthetic codes


def synthetic_items(n_per_class: int, seed: int, classes: int = 4, k: int = 32, shape=(4, 4)) -> RetrievalItems:
    """Grids that copy their class's prototype at about 70 % of the positions."""
    rng = np.random.default_rng(seed)
    prototypes = np.random.default_rng(123).integers(0, k, (classes, *shape))
    labels = np.repeat(np.arange(classes), n_per_class)
    grids = prototypes[labels].copy()
    noise = rng.random(grids.shape) < 0.3
    grids[noise] = rng.integers(0, k, noise.sum())
    codebook = np.random.default_rng(7).normal(size=(k, 8)).astype(np.float32)
    n = len(labels)
    return RetrievalItems(CodeFile(torch.from_numpy(grids), torch.from_numpy(labels)), codebook,
                          continuous=codebook[grids].mean(axis=(1, 2)), baseline=rng.random((n, 5)),
                          baseline_name="pixels", ids=[f"s{seed}/{i}" for i in range(n)], tokenizer="t" * 64,
                          classes=tuple("abcd"[:classes]))


@pytest.mark.parametrize(("representation", "least"), [("bag", 0.85), ("pooled", 0.5), ("ngram", 0.85)])
def test_each_representation_finds_the_class_of_synthetic_codes(representation, least, tmp_path):
    index = CoreIndex.from_items(synthetic_items(30, 0), Settings(rerank=20))
    queries = synthetic_items(5, 1)
    results = index.search(queries, 10, representation=representation)
    labels = np.array([[ord(x) - ord("a") for x in row] for row in results.labels])
    assert (labels == queries.labels[:, None]).mean() >= least  # chance: 0.25; pooling random codes blurs them
    assert results.scores.shape == (20, 10) and (np.diff(results.scores, axis=1) <= 1e-6).all()
    index.save(tmp_path / "index")
    again = CoreIndex.load(tmp_path / "index")
    np.testing.assert_array_equal(again.search(queries, 10, representation=representation).rows, results.rows)


def test_excluded_items_are_never_found():
    index = CoreIndex.from_items(synthetic_items(10, 0), Settings(rerank=5))
    queries = synthetic_items(2, 1)
    left_out = np.arange(0, 40, 2)  # every other item
    for name in ("bag", "pooled", "ngram"):
        _, rows = index.neighbours(queries, 20, name, left_out)
        assert (rows >= 0).all() and not np.isin(rows, left_out).any(), name
    _, rows = exact_knn(index.vectors()["baseline"], queries.baseline, 25, exclude=left_out)
    assert not np.isin(rows, left_out).any() and (rows[:, 20:] == -1).all()  # only 20 items left


def test_an_empty_index_and_bad_queries_are_refused():
    items = synthetic_items(3, 0)
    with pytest.raises(RetrievalError, match="nothing to index"):
        CoreIndex.from_items(items.select(np.array([], dtype=np.int64)))
    index = CoreIndex.from_items(items)
    with pytest.raises(RetrievalError, match="k must be a positive"):
        index.search(items, 0)
    with pytest.raises(RetrievalError, match="unknown representation"):
        index.search(items, 3, representation="pixels")
    other = synthetic_items(2, 1, shape=(2, 2))
    with pytest.raises(RetrievalError, match=r"shape \(2, 2\) but this index holds \(4, 4\)"):
        index.search(other, 3)
    foreign = synthetic_items(2, 1)
    foreign.tokenizer = "u" * 64
    with pytest.raises(TokenizerMismatch, match="encoded by tokenizer weights uuuu"):
        index.search(foreign, 3)
    with pytest.raises(RetrievalError, match="cannot read or encode raw queries"):
        index.search(torch.zeros(1, 3, 4, 4), 3)


def test_a_missing_or_incomplete_index_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist: build one with vqvae index"):
        CoreIndex.load(tmp_path / "nowhere")
    CoreIndex.from_items(synthetic_items(3, 0)).save(tmp_path / "index")
    (tmp_path / "index" / "ngram.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"incomplete: ngram.npz missing"):
        CoreIndex.load(tmp_path / "index")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a vqvae index"):
        CoreIndex.from_items(synthetic_items(3, 0)).save(tmp_path / "other")


# ------------------------------------------------------------------ images end to end


@pytest.fixture(scope="module")
def image_run(tiny_images, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "images"
    assert main(["train", "--data", str(tiny_images), "--out", str(run), "--max-steps", "2", "--val-every", "2",
                 *TINY]) == 0
    return run


@pytest.fixture(scope="module")
def image_index(image_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("indexes") / "images"
    assert main(["index", str(image_run), "-o", str(out), "--batch-size", "16"]) == 0
    return out


def test_index_writes_codes_manifest_and_search_structures(image_run, image_index):
    manifest = json.loads((image_index / "manifest.json").read_text())
    weights = hashlib.sha256((image_run / "model.safetensors").read_bytes()).hexdigest()
    assert manifest["tokenizer_sha256"] == weights and manifest["modality"] == "image"
    assert manifest["items"] == 43 and manifest["code_shape"] == [4, 4]  # 48 images, 10 % held out
    assert sorted(p.name for p in image_index.iterdir()) == sorted(["manifest.json", *manifest["files"]])
    codes = load_codes(image_index / "codes.npz")  # the one code-file format
    model = vqvae.load(image_run)
    from vqvae.modalities.image.evaluation import run_data

    images = run_data(image_run, split="train").images
    np.testing.assert_array_equal(codes.codes.numpy(), model.encode(images.float() / 255).numpy())
    assert codes.labels.tolist() == run_data(image_run, split="train").labels.tolist()


def test_search_image_files_writes_results_and_a_contact_sheet(image_index, tiny_images, tmp_path, capsys):
    queries = [tiny_images / "discs" / "000.png", tiny_images / "stripes" / "005.png"]
    code = main(["search", str(image_index), *map(str, queries), "-k", "3", "-o", str(tmp_path / "found")])
    out, err = capsys.readouterr()
    assert code == 0, err
    records = json.loads((tmp_path / "found" / "results.json").read_text())["results"]
    assert [(r["query"], r["rank"]) for r in records] == [(str(q), r) for q in queries for r in (1, 2, 3)]
    assert set(records[0]) == {"query", "rank", "id", "label", "path", "score"}
    assert records[0]["label"] in ("discs", "stripes") and "rank" in out
    with Image.open(tmp_path / "found" / "contact_sheet.png") as sheet:
        assert sheet.width > sheet.height  # two rows of query + three hits
    code = main(["search", str(image_index), "--split", "val", "-n", "2", "-k", "2", "-o", str(tmp_path / "val")])
    assert code == 0, capsys.readouterr().err
    records = json.loads((tmp_path / "val" / "results.json").read_text())["results"]
    assert [r["query"] for r in records] == ["val/0", "val/0", "val/1", "val/1"]


def test_python_api_builds_loads_and_searches(image_run, image_index, tiny_images):
    index = vqvae.Index.load(image_index)
    from vqvae.modalities.image.evaluation import run_data

    val = run_data(image_run, split="val")
    results = index.search(val.images[:2], k=4)
    assert results.rows.shape == (2, 4) and results.representation == index.default
    built = vqvae.Index.build(image_run, str(tiny_images), split="val")
    assert len(built) == len(val)
    with pytest.raises(RetrievalError, match=r"not an image file .* query it with images"):
        index.search(tiny_images / "clip.wav")
    with pytest.raises(RetrievalError, match=r"must be \(B, 3, 16, 16\)"):
        index.search(torch.zeros(1, 1, 28, 28, dtype=torch.uint8))


def test_evaluate_retrieval_reports_every_representation_and_the_baselines(image_index, tmp_path, capsys):
    path = tmp_path / "retrieval.json"
    code = main(["evaluate-retrieval", str(image_index), "--split", "val", "--json", str(path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(path.read_text())
    assert set(report) == {"default", "results"} and report["default"] == Settings().default
    assert set(report["results"]) == {"bag", "pooled", "ngram", "pixels", "continuous"}
    for scores in report["results"].values():
        assert set(scores) == {"precision_at_1", "precision_at_10", "map_at_10"}
        assert all(0 <= v <= 1 for v in scores.values())
    assert "pixels" in out


def test_an_index_refuses_another_tokenizer(image_run, image_index, tiny_images, tmp_path, capsys):
    other = tmp_path / "retrained"
    shutil.copytree(image_run, other)
    model = vqvae.load(other)
    with torch.no_grad():
        model.quantizer.codebook.add_(0.01)  # any change to the weights is another tokenizer
    from vqvae.checkpoint import save_tensors

    save_tensors(other / "model.safetensors", model.state_dict(), {"format": "vqvae"})
    with pytest.raises(TokenizerMismatch, match="another or retrained tokenizer"):
        vqvae.Index.load(image_index, run=other)
    moved = tmp_path / "index"
    shutil.copytree(image_index, moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    (moved / "manifest.json").write_text(json.dumps({**manifest, "run": str(other)}))
    capsys.readouterr()
    code = main(["search", str(moved), str(tiny_images / "discs" / "000.png"), "-k", "2"])
    assert code == 2 and "rebuild the index with vqvae index" in capsys.readouterr().err


# ------------------------------------------------------------------ speech end to end


SPEECH_TINY = ["--hidden", "16", "--res-hidden", "8", "--codebook-size", "16", "--code-dim", "8",
               "--decoder-width", "32", "--speaker-dim", "8", "--segment", "512", "--batch-size", "4"]


@pytest.fixture(scope="module")
def speech_index(fsdd_mini, tmp_path_factory):
    root = tmp_path_factory.mktemp("speech")
    run = root / "run"
    assert main(["train", "--data", "fsdd", "--data-dir", str(fsdd_mini), "--out", str(run), *SPEECH_TINY,
                 "--max-steps", "2", "--val-every", "2", "--no-progress"]) == 0
    assert main(["index", str(run), "-o", str(root / "index")]) == 0
    return run, root / "index"


def test_speech_index_holds_rows_speakers_and_names(speech_index):
    run, folder = speech_index
    index = vqvae.Index.load(folder)
    assert index.manifest["modality"] == "speech" and not index.manifest["fixed_shape"]
    assert len(index) == 16 and index.ids[0].count("_") == 2  # digits 0-1 x 2 speakers x takes 10-13
    from vqvae.modalities.speech.run import encode_clips, load_speech, speech_data

    audio = speech_data(run, split="train", default_split="train")
    expected = encode_clips(load_speech(run), audio.waveforms)
    assert all(torch.equal(a, b) for a, b in zip(index.codes.rows(), expected, strict=True))
    assert set(index.codes.extras["speakers"].tolist()) == {0, 1}


def test_speech_search_and_cross_speaker_evaluation(speech_index, fsdd_mini, tmp_path, capsys):
    run, folder = speech_index
    query = fsdd_mini / "1_theo_5.wav"
    assert main(["search", str(folder), str(query), "-k", "3", "-o", str(tmp_path / "found")]) == 0
    assert sorted(p.name for p in (tmp_path / "found" / "query_00").iterdir())[0] == "00_query.wav"
    assert len(list((tmp_path / "found" / "query_00").glob("*.wav"))) == 4
    path = tmp_path / "speech.json"
    assert main(["evaluate-retrieval", str(folder), "--split", "val", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert set(report["results"]) == set(report["results_cross_speaker"]) == {"bag", "pooled", "ngram", "log_mel",
                                                                             "continuous"}
    png = tmp_path / "x.png"
    Image.new("L", (8, 8)).save(png)
    capsys.readouterr()
    assert main(["search", str(folder), str(png)]) == 2
    assert "not a WAV file" in capsys.readouterr().err


# ------------------------------------------------------------------ the re-ranking's shift, chosen by the items' labels


def shifted_items(n_per_class: int, seed: int, classes: int = 4, k: int = 32) -> RetrievalItems:
    """Each item is its class's 6x6 prototype moved by up to one position along each axis."""
    items = synthetic_items(n_per_class, seed, classes, k, shape=(6, 6))
    rng = np.random.default_rng(seed)
    prototypes = np.random.default_rng(5).integers(0, k, (classes, 6, 6))
    labels = items.labels
    grids = np.stack([np.roll(prototypes[c], tuple(rng.integers(-1, 2, 2)), axis=(0, 1)) for c in labels])
    items.codes = CodeFile(torch.from_numpy(grids), torch.from_numpy(labels))
    return items


def test_the_shift_is_chosen_by_the_items_labels_and_kept_in_the_manifest(tmp_path):
    index = CoreIndex.from_items(shifted_items(40, 0))
    tuning = index.manifest["tuning"]["shift"]
    scores = tuning["precision_at_10"]
    assert scores["1"] > scores["0"] and tuning["chosen"] == 1 == index.settings.shift  # moved copies match
    assert tuning["queries"] == 80  # half the items play the queries, at most 500
    index.save(tmp_path / "index")
    assert CoreIndex.load(tmp_path / "index").settings.shift == 1
    fixed = CoreIndex.from_items(shifted_items(40, 0), Settings(shift=0))
    assert fixed.settings.shift == 0 and fixed.manifest["tuning"] == {}  # a given shift is kept, not tuned


def test_without_labels_the_shift_is_zero():
    items = synthetic_items(10, 0)
    items.codes = CodeFile(items.codes.codes, torch.full((len(items.codes.codes),), -1))
    index = CoreIndex.from_items(items)
    assert index.settings.shift == 0 and "no labels" in index.manifest["tuning"]["shift"]["reason"]
