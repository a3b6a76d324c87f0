from collections import Counter
from importlib import resources
from pathlib import Path

from engine.core.mapping import nextcrm
from tests.conftest import SHARED, shared


def test_counts_match_the_real_schema() -> None:
    m = nextcrm()
    assert len(m.collections) == 29
    assert len(m.tables) == 39
    assert len(m.foreign_keys) == 52
    assert len(m.indexes) == 121
    assert len(m.junctions) == 10
    assert len(m.enums) == 10
    assert [i.table for i in m.indexes if i.unique] == ["Users"]


def test_packaged_fact_tables_equal_shared() -> None:
    packaged = Path(str(resources.files("engine") / "nextcrm"))
    tables = sorted(shared(SHARED).glob("*.tsv"))
    assert len(tables) == 7
    for f in tables:
        assert (packaged / f.name).read_text() == f.read_text(), f.name


def test_every_mongo_field_has_a_destination() -> None:
    """Each stored field is a column or feeds a junction: nothing silently dropped."""
    m = nextcrm()
    path = Path(str(resources.files("engine") / "nextcrm" / "mongo_collections.tsv"))
    lines = path.read_text().splitlines()[1:]
    for line in lines:
        coll, stored = line.split("\t")[:2]
        table = m.table_for_collection(coll)
        fields = {c.source_field for c in table.columns} | {
            s.field for s in table.junction_sources}
        assert stored in fields, f"{coll}.{stored}"
    assert Counter(line.split("\t")[0] for line in lines).keys() == set(m.collections)


def test_load_order_puts_referenced_tables_first() -> None:
    m = nextcrm()
    order = m.load_order()
    for fk in m.foreign_keys:
        assert order.index(fk.ref_table) < order.index(fk.table), fk.name
