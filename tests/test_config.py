"""The configuration catalog: defaults, TOML, API edits, and errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamprov.config import Catalog, Configuration, NodeType
from streamprov.errors import InvalidInput, NotFound

NOWHERE = Path("/nonexistent")


def test_defaults() -> None:
    cat = Catalog.load(None, None, cwd=NOWHERE)
    assert {"small", "medium", "large", "wide"} <= set(cat.configurations())
    small = cat.configuration("small")
    assert cat.node_type(small.node_type).cpus >= 1
    with pytest.raises(NotFound) as exc:
        cat.configuration("xl")
    assert exc.value.field == "configurationId"


def test_toml_file_and_working_directory(tmp_path: Path) -> None:
    (tmp_path / "streamprov.toml").write_text(
        '[node_types.big]\ncpus = 8\nmemory_bytes = 34359738368\ncost_per_hour = 1.5\n\n'
        '[configurations.fast]\nnodes = { parse = 4, enrich = 2 }\nnode_type = "big"\n'
        'batch_size = 4096\n\n[serve]\n'
        'pipelines = { demo = "streamprov.examples.demo:pipeline" }\n')
    cat = Catalog.load(None, None, cwd=tmp_path)
    fast = cat.configuration("fast")
    assert fast.nodes == {"parse": 4, "enrich": 2} and fast.batch_size == 4096
    assert cat.node_type("big").memory_bytes == 32 << 30
    assert cat.serve.pipelines == {"demo": "streamprov.examples.demo:pipeline"}
    assert "small" in cat.configurations()  # defaults stay
    assert Catalog.load(tmp_path / "streamprov.toml", None).source.endswith("streamprov.toml")


@pytest.mark.parametrize(("text", "field"), [
    ("[configurations.x]\nnodes = 0\nnode_type = \"small\"\n", "configurations.x.nodes"),
    ("[configurations.x]\nnodes = 1\nnode_type = \"small\"\nbatch_size = -1\n",
     "configurations.x.batch_size"),
    ("[configurations.x]\nnodes = 1\nnode_type = \"gpu\"\n", "configurations.x.node_type"),
    ("[configurations.x]\nnodes = 1\n", "configurations.x.node_type"),
    ("[node_types.t]\ncpus = 0\nmemory_bytes = 1\ncost_per_hour = 0\n", "node_types.t.cpus"),
    ("[configurations.x]\nnodes = 1\nnode_type = \"small\"\ncolour = 1\n",
     "configurations.x.colour"),
    ("[configurations\n", "config-file"),
])
def test_bad_toml_names_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(InvalidInput) as exc:
        Catalog.load(path, None)
    assert exc.value.field == field
    assert str(path) in str(exc.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as exc:
        Catalog.load(tmp_path / "nope.toml", None)
    assert exc.value.field == "config-file"


def test_stage_counts() -> None:
    stages = ["parse", "valid", "sink"]
    assert Configuration(nodes=3, node_type="small").stage_counts(stages, 8) == dict.fromkeys(
        stages, 3)
    assert Configuration(nodes=3, node_type="small").stage_counts(
        stages, 8, {"sink": False})["sink"] == 1
    assert Configuration(nodes={"parse": 2}, node_type="small").stage_counts(stages, 8) == {
        "parse": 2}
    with pytest.raises(InvalidInput) as exc:
        Configuration(nodes=9, node_type="small").stage_counts(stages, 8)
    assert exc.value.field == "nodes" and "max_parallelism" in str(exc.value)
    with pytest.raises(InvalidInput) as exc:
        Configuration(nodes={"enrich": 2}, node_type="small").stage_counts(stages, 8)
    assert exc.value.field == "nodes.enrich"
    with pytest.raises(InvalidInput) as exc:
        Configuration(nodes={"parse": 9}, node_type="small").stage_counts(stages, 8)
    assert exc.value.field == "nodes.parse"


def test_api_edits_persist_in_the_data_dir(tmp_path: Path) -> None:
    cat = Catalog.load(None, tmp_path, cwd=NOWHERE)
    assert cat.put_node_type("gpu", NodeType(cpus=4, memory_bytes=1 << 34, cost_per_hour=3.0))
    assert cat.put_configuration("g", Configuration(nodes=2, node_type="gpu"))
    assert not cat.put_configuration("g", Configuration(nodes=3, node_type="gpu"))
    with pytest.raises(InvalidInput) as exc:
        cat.put_configuration("h", Configuration(nodes=1, node_type="tpu"))
    assert exc.value.field == "nodeType"
    with pytest.raises(InvalidInput):
        cat.put_configuration("bad id", Configuration(nodes=1, node_type="gpu"))
    again = Catalog.load(None, tmp_path, cwd=NOWHERE)
    assert again.configuration("g").nodes == 3
    assert again.node_type("gpu").cpus == 4
    assert "h" not in again.configurations()
