"""The pure rules of archiving: methods, names, keys, containment, URIs, and the events'
compatible extension (an event written before archiving still decodes)."""

from __future__ import annotations

import pytest

from workflow.core import events as ev
from workflow.core.errors import ValidationError
from workflow.core.products import (
    ArchivedFile,
    ArchiveError,
    check_allowed,
    methods_of,
    names_for,
    object_key,
    posix_relative,
    uris,
    within,
)


def test_methods_default_to_copy_and_a_bad_one_is_refused_naming_the_field():
    assert methods_of(None) == {"product": "copy", "plot": "copy"}
    assert methods_of({"archive": {"plots": "move"}}) == {"product": "copy", "plot": "move"}
    with pytest.raises(ValidationError, match=r"config.archive.products: must be one of bypass, copy, move, delete"):
        methods_of({"archive": {"products": "keep"}})
    with pytest.raises(ArchiveError, match="'delete' for plots is not allowed at this site"):
        check_allowed("delete", frozenset({"copy"}), "plot")


def test_names_are_unique_and_keys_hold_the_work_and_the_attempt():
    assert names_for(["a/x.png", "b/x.png", "c/y.fits"]) == ["x.png", "x-2.png", "y.fits"]
    assert object_key("W1", 3, "plot", "x.png") == "W1/3/plots/x.png"
    assert object_key("W1", 3, "product", "../../etc") == "W1/3/products/.._.._etc"
    assert posix_relative("W1", "frb search", 2, "product", "c.h5", 0.0) == "19700101/frb_search/W1/2/products/c.h5"


def test_containment_is_by_path_component_not_by_prefix():
    assert within("/data/w/x.fits", ["/data/w"])
    assert not within("/data/w2/x.fits", ["/data/w"])
    assert within("/anything", ["/"])


def test_the_works_products_become_the_uris_and_a_deleted_file_has_none():
    archived = [
        ArchivedFile(kind="product", name="a", path="/w/a", method="copy", uri="obj://P/k"),
        ArchivedFile(kind="product", name="b", path="/w/b", method="delete"),
    ]
    assert uris(archived, "product") == ["obj://P/k"]
    assert uris(archived, "plot") is None


def test_an_outcome_event_written_before_archiving_still_decodes_and_a_new_one_round_trips():
    old = (b'{"type":"succeeded","work_id":"W","pipeline":"p","time":1.0,"id":"E","v":1,"attempt":1,'
           b'"products":["/tmp/x.fits"]}')
    event = ev.decode(old)
    assert isinstance(event, ev.Succeeded) and event.archived is None and event.products == ["/tmp/x.fits"]
    record = ArchivedFile(kind="plot", name="x.png", path="/w/x.png", method="copy", uri="obj://P/W/1/plots/x.png",
                          size=3, sha256="ab" * 32, storage="objectstore")
    new = ev.Failed(work_id="W", pipeline="p", time=1.0, attempt=1, reason="archive", will_retry=True,
                    archived=[record])
    assert ev.decode(ev.encode(new)) == new
