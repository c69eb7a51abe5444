"""Zoo entries by handle: a local HTTP server (an ephemeral port on 127.0.0.1) serves an
entry; the cache, its verification and what a failed or hostile download leaves behind."""

import http.server
import json
import os
import shutil
import threading

import numpy as np
import pytest

import byol_tf
from byol_tf import data, hub, zoo

SAMPLE_ENTRY = hub.REGISTRY.parent / "models" / "byol_tiny_resnet_cifar10_sample"


class Server:
    """Serves `root` on 127.0.0.1; counts GET requests; `cut` names files sent only half
    (the connection closed mid-file, as a server that dies)."""

    def __init__(self, root):
        self.requests, self.cut = [], set()
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                name = self.path.rsplit("/", 1)[-1]
                if name in server.cut:
                    body = (root / self.path.lstrip("/")).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """(server, handle of the served sample entry, the cache folder)."""
    root = tmp_path / "www"
    shutil.copytree(SAMPLE_ENTRY, root / "entry")
    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path / "cache"))
    server = Server(root)
    yield server, f"{server.url}/entry", tmp_path / "cache" / "zoo"
    server.close()


def cached_files(cache):
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())


def test_an_entry_by_http_handle_loads_and_a_second_load_fetches_only_its_card(served):
    server, handle, cache = served
    images = data.load_sample()["x_test"][:4]
    loaded = zoo.load(handle)
    assert isinstance(loaded, byol_tf.ImageEncoder) and loaded.trainable_weights == []
    np.testing.assert_allclose(np.asarray(loaded(images)),
                               np.asarray(zoo.load("byol_tiny_resnet_cifar10_sample")(images)),
                               atol=1e-6)
    card = json.loads((SAMPLE_ENTRY / hub.CARD).read_text())
    assert len(server.requests) == 1 + len(card["files"])  # the card, then each file once
    again = byol_tf.ImageEncoder.from_preset(handle, trainable=True)
    assert again.trainable_weights and len(server.requests) == 2 + len(card["files"])
    assert server.requests[-1].endswith(hub.CARD)  # (is the entry still the same?)
    server.close()  # no network: the verified cache is used
    assert zoo.info(handle)["name"] == "byol_tiny_resnet_cifar10_sample"
    assert not [p for p in cache.rglob("*") if ".partial-" in p.name]


def test_a_card_changed_on_the_server_is_seen_and_an_error_page_is_not_kept(served):
    server, handle, cache = served
    served_card = cache.parent.parent / "www" / "entry" / hub.CARD
    good = served_card.read_text()
    zoo.load(handle)
    served_card.write_text("<html>502 Bad Gateway</html>")  # served once, by a broken proxy
    with pytest.raises(ValueError, match="is not valid JSON"):
        zoo.load(handle)
    served_card.write_text(good.replace("byol_tiny_resnet_cifar10_sample", "renamed"))
    assert zoo.info(handle)["name"] == "renamed"  # the server's card, not the cached one


def test_a_byte_flipped_on_the_server_is_refused_naming_the_file_and_both_hashes(served):
    server, handle, cache = served
    encoder = cache.parent.parent / "www" / "entry" / "encoder.keras"  # the served copy
    blob = bytearray(encoder.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    encoder.write_bytes(bytes(blob))
    expected = json.loads((SAMPLE_ENTRY / hub.CARD).read_text())["files"]["encoder.keras"]
    with pytest.raises(ValueError, match=rf"encoder\.keras has sha256 [0-9a-f]{{64}}, expected "
                                         rf"{expected['sha256']}"):
        zoo.load(handle)
    assert not any(p.name == "encoder.keras" for p in cache.rglob("*"))  # nothing trusted


def test_a_server_dying_mid_file_leaves_nothing_trusted_and_the_next_load_redoes_it(served):
    server, handle, cache = served
    server.cut.add("encoder.keras")
    with pytest.raises(OSError, match=f"for the zoo handle {handle}"):
        zoo.load(handle)
    assert not any(p.name == "encoder.keras" or ".partial-" in p.name for p in cache.rglob("*"))
    server.cut.clear()
    assert isinstance(zoo.load(handle), byol_tf.ImageEncoder)


def test_no_network_names_the_handle(tmp_path, monkeypatch):
    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path / "cache"))
    server = Server(tmp_path)
    handle = f"{server.url}/entry"
    server.close()
    with pytest.raises(OSError, match=f"could not fetch {handle}/model_card.json for the zoo "
                                      f"handle {handle}"):
        zoo.load(handle)


@pytest.mark.parametrize("bad", ["../outside.keras", "/etc/passwd", "saved_model/../../x"])
def test_a_card_naming_a_path_out_of_its_entry_is_refused(tmp_path, bad):
    entry = tmp_path / "entry"
    shutil.copytree(SAMPLE_ENTRY, entry)
    card = json.loads((entry / hub.CARD).read_text())
    card["files"][bad] = {"sha256": "0" * 64}
    (entry / hub.CARD).write_text(json.dumps(card))
    with pytest.raises(ValueError, match="leaves the entry"):
        zoo.load(str(entry))


def test_links_out_and_unlisted_model_files_are_refused(tmp_path):
    entry = tmp_path / "entry"
    shutil.copytree(SAMPLE_ENTRY, entry)
    (tmp_path / "elsewhere.keras").write_bytes((entry / "encoder.keras").read_bytes())
    (entry / "encoder.keras").unlink()
    os.symlink(tmp_path / "elsewhere.keras", entry / "encoder.keras")
    with pytest.raises(ValueError, match="encoder.keras is a link"):
        zoo.load(str(entry))
    (entry / "encoder.keras").unlink()
    shutil.copyfile(tmp_path / "elsewhere.keras", entry / "encoder.keras")
    card = json.loads((entry / hub.CARD).read_text())
    del card["files"]["encoder.keras"]
    (entry / hub.CARD).write_text(json.dumps(card))
    with pytest.raises(ValueError, match="does not list encoder.keras"):
        zoo.load(str(entry))


def test_the_registry_vouches_for_every_shipped_file():
    """Every published entry's record lists the sha256 of each of its files, the card's too,
    and they match the files shipped in the package."""
    records = hub.registry()
    assert set(records) == set(zoo.list()) and "byol_tiny_resnet_cifar10" in records
    for name, record in records.items():
        assert record["handle"] == f"{hub.PACKAGE}models/{name}"
        folder = hub.REGISTRY.parent / "models" / name
        card = json.loads((folder / hub.CARD).read_text())
        assert set(record["files"]) == set(card["files"]) | {hub.CARD}
        hub.verify(folder, record["files"], name)
        assert "run_dir" not in card.get("pretraining", {})  # no machine's paths on a card


@pytest.mark.parametrize("name", ["byol_tiny_resnet_cifar10", "byol_tiny_resnet_cifar10_sample"])
def test_an_entrys_readme_snippet_runs(name):
    text = (hub.REGISTRY.parent / "models" / name / "README.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace = {}
    exec(code, namespace)  # noqa: S102 (the entry's own documentation)
    assert namespace["encoder"].trainable_weights == []
    assert namespace["classifier"].output_shape == (None, 10)
    assert namespace["tunable"].trainable_weights


@pytest.mark.parametrize("name,url", [("../../outside", "https://example.org/ckpt.pkl"),
                                      ("ok_name", "https://example.org/a/..")])
def test_an_imported_card_cannot_place_its_download_outside_the_cache(tmp_path, monkeypatch,
                                                                      name, url):
    """A card of kind deepmind_checkpoint names its cache folder and file: refused unless both
    are plain names, before anything is fetched."""
    monkeypatch.setenv("BYOL_TF_CACHE", str(tmp_path / "cache"))
    fetched = []
    monkeypatch.setattr(hub, "fetch", lambda *args, **kwargs: fetched.append(args))
    entry = tmp_path / "entry"
    entry.mkdir()
    card = dict(name=name, image_size=224, source=dict(kind="deepmind_checkpoint", url=url),
                files={})
    (entry / hub.CARD).write_text(json.dumps(card))
    with pytest.raises(ValueError, match="an entry name is letters"):
        zoo.load(str(entry))
    assert fetched == [] and not (tmp_path / "outside").exists()
