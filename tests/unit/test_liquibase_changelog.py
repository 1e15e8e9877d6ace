"""Reading Liquibase changelogs without a JVM: order, digests, the tree reduced to one changeset,
and prepare:lb's argument rules. (Liquibase itself checks the order and the reduced trees in
tests/integration/test_inputs_liquibase.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sqlrs.changelogs.liquibase import Project, only_changeset, parse_file, read_project
from sqlrs.changelogs.liquibase_install import disk_reader
from sqlrs.domain.errors import UsageError
from sqlrs.engine_client.errors import ClientError as CliError
from sqlrs.engine_client.liquibase import parse_lb_args

XML_HEAD = '<?xml version="1.0"?>\n<databaseChangeLog xmlns="http://www.liquibase.org/xml/ns/dbchangelog">\n'
XML_TAIL = "</databaseChangeLog>\n"


def xml(*body: str) -> str:
    return XML_HEAD + "".join(body) + XML_TAIL


def changeset(ident: str, author: str = "a", inner: str = '<sql>select 1</sql>') -> str:
    return f'  <changeSet id="{ident}" author="{author}">\n    {inner}\n  </changeSet>\n'


def project_at(root: Path, files: dict[str, str], master: str = "master.xml") -> Project:
    for path, text in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return read_project(master, *disk_reader(root))


def sources(project: Project) -> list[str]:
    return [f"{c.filename}::{c.id}::{c.author}" for c in project.changesets]


LIBRARY = {
    "master.xml": xml('  <property name="n" value="1"/>\n', changeset("m1"),
                      '  <include file="sub/a.yaml" relativeToChangelogFile="true"/>\n',
                      '  <includeAll path="all/" relativeToChangelogFile="true"/>\n', changeset("m2")),
    "sub/a.yaml": "databaseChangeLog:\n  - changeSet:\n      id: y1\n      author: b\n      changes:\n"
                  "        - loadData: {tableName: t, file: ../data/t.csv, relativeToChangelogFile: true}\n",
    "data/t.csv": "a,b\n1,2\n",
    "all/20-late.sql": "--liquibase formatted sql\n--changeset c:s1\nselect 1;\n"
                       "--changeset c:s2 runAlways:true\nselect 2;\n",
    "all/10-early.xml": xml(changeset("x1")),
    "all/sub/05-deep.json": '{"databaseChangeLog": [{"changeSet": {"id": "j1", "author": "d", "changes": []}}]}',
    "all/15-raw.sql": "create table raw_one (a int);\n",
    "all/notes.txt": "not a changelog",
}


def test_order_is_depth_first_with_include_all_sorted_by_path(tmp_path: Path) -> None:
    project = project_at(tmp_path, LIBRARY)
    assert sources(project) == [
        "master.xml::m1::a", "sub/a.yaml::y1::b", "all/10-early.xml::x1::a", "all/15-raw.sql::raw::includeAll",
        "all/20-late.sql::s1::c", "all/20-late.sql::s2::c", "all/sub/05-deep.json::j1::d", "master.xml::m2::a"]
    assert "data/t.csv" in {f.path for f in project.files}
    assert "all/notes.txt" not in {f.path for f in project.files}


def test_appending_a_changeset_keeps_every_earlier_digest(tmp_path: Path) -> None:
    before = project_at(tmp_path / "one", LIBRARY)
    grown = dict(LIBRARY)
    grown["all/20-late.sql"] += "\n\n--changeset c:s3\nselect 3;\n"
    grown["master.xml"] = LIBRARY["master.xml"].replace(XML_TAIL, changeset("m3") + XML_TAIL)
    after = project_at(tmp_path / "two", grown)
    digests = dict(zip(sources(after), (c.digest for c in after.changesets), strict=True))
    assert all(digests[source] == c.digest for source, c in zip(sources(before), before.changesets, strict=True))
    assert sources(after)[-4:] == ["all/20-late.sql::s3::c", "all/sub/05-deep.json::j1::d", "master.xml::m2::a",
                                   "master.xml::m3::a"]


# one changelog of each format with one changeset, and a master in each format that includes them
INCLUDED = {
    "xml": lambda name: xml(changeset(name)),
    "yaml": lambda name: f"databaseChangeLog:\n  - changeSet:\n      id: {name}\n      author: y\n"
                         "      changes:\n        - sql: {sql: select 1}\n",
    "json": lambda name: json.dumps({"databaseChangeLog": [{"changeSet": {
        "id": name, "author": "j", "changes": [{"sql": {"sql": "select 1"}}]}}]}),
    "sql": lambda name: f"--liquibase formatted sql\n--changeset s:{name}\nselect 1;\n",
}


def master(fmt: str, includes: list[str], context: str | None = None) -> str:
    """A master changelog as JHipster grows one: a property and a changeset, then one include per
    file (the first with `context`, if given)."""
    options = [{"context": context} if context and not index else {} for index in range(len(includes))]
    if fmt == "xml":
        return xml('  <property name="schema" value="public"/>\n', changeset("m0"), *(
            f'  <include file="changes/{path}" relativeToChangelogFile="true"'
            + "".join(f' {key}="{value}"' for key, value in extra.items()) + "/>\n"
            for path, extra in zip(includes, options, strict=True)))
    items = [{"property": {"name": "schema", "value": "public"}},
             {"changeSet": {"id": "m0", "author": "a", "changes": [{"sql": {"sql": "select 1"}}]}},
             *({"include": {"file": f"changes/{path}", "relativeToChangelogFile": True, **extra}}
               for path, extra in zip(includes, options, strict=True))]
    if fmt == "json":
        return json.dumps({"databaseChangeLog": items}, indent=2)
    return yaml.safe_dump({"databaseChangeLog": items}, sort_keys=False)


@pytest.mark.parametrize("master_format", ["xml", "yaml", "json"])
def test_appending_an_include_keeps_every_earlier_digest(tmp_path: Path, master_format: str) -> None:
    """Issue 22.1: a master changelog that grows by one include per new file (of every format)
    keeps the digest, hence the cached state, of every changeset before the new include."""
    name = f"master.{master_format}"
    files = {f"changes/{index:02}-{fmt}.{fmt}": INCLUDED[fmt](f"c{index}") for index, fmt in enumerate(INCLUDED)}
    included = sorted(path.removeprefix("changes/") for path in files)
    before = project_at(tmp_path / "0", {**files, name: master(master_format, included)}, name)
    assert [c.id for c in before.changesets] == ["m0", "c0", "c1", "c2", "c3"]
    for step, fmt in enumerate(INCLUDED, start=1):  # grow by one include of each format in turn
        added = f"{10 + step}-new.{fmt}"
        files[f"changes/{added}"] = INCLUDED[fmt](f"new{step}")
        included.append(added)
        after = project_at(tmp_path / str(step), {**files, name: master(master_format, included)}, name)
        assert [c.digest for c in after.changesets[:-1]] == [c.digest for c in before.changesets], fmt
        assert after.changesets[-1].id == f"new{step}" and after.changesets[-1].filename == f"changes/{added}"
        before = after
    # what precedes a changeset still counts: an include put before the others changes every
    # later digest, and so do a property's value and an include's options (its contexts)
    files["changes/00-first.sql"] = INCLUDED["sql"]("first")
    first = project_at(tmp_path / "first", {**files, name: master(master_format, ["00-first.sql", *included])}, name)
    assert first.changesets[0].digest == before.changesets[0].digest
    assert not {c.digest for c in first.changesets[1:]} & {c.digest for c in before.changesets}
    text = master(master_format, included)
    prop = project_at(tmp_path / "prop", {**files, name: text.replace("public", "other")}, name)
    assert not {c.digest for c in prop.changesets} & {c.digest for c in before.changesets}
    contexts = master(master_format, included, context="test")
    optioned = project_at(tmp_path / "ctx", {**files, name: contexts}, name)
    assert optioned.changesets[0].digest == before.changesets[0].digest
    assert not {c.digest for c in optioned.changesets[1:]} & {c.digest for c in before.changesets}


def test_data_files_properties_and_recorded_paths_enter_the_digest(tmp_path: Path) -> None:
    base = project_at(tmp_path / "base", LIBRARY).changesets
    csv = project_at(tmp_path / "csv", {**LIBRARY, "data/t.csv": "a,b\n1,3\n"}).changesets
    assert csv[1].digest != base[1].digest and csv[0].digest == base[0].digest
    prop = project_at(tmp_path / "prop", {**LIBRARY, "master.xml": LIBRARY["master.xml"].replace(
        'value="1"', 'value="2"')}).changesets
    assert all(p.digest != b.digest for p, b in zip(prop, base, strict=True))
    # the same file under another name is another FILENAME in DATABASECHANGELOG: another changeset
    moved = dict(LIBRARY)
    moved["all/11-early.xml"] = moved.pop("all/10-early.xml")
    assert project_at(tmp_path / "moved", moved).changesets[2].digest != base[2].digest


def test_include_spelling_does_not_matter_but_logical_file_path_does(tmp_path: Path) -> None:
    inner = xml(changeset("only"))
    relative = project_at(tmp_path / "r", {
        "master.xml": xml('<include file="./db/x.xml" relativeToChangelogFile="true"/>'), "db/x.xml": inner})
    absolute = project_at(tmp_path / "a", {"master.xml": xml('<include file="db/../db/x.xml"/>'), "db/x.xml": inner})
    assert relative.changesets[0].digest == absolute.changesets[0].digest
    assert relative.changesets[0].filename == "db/x.xml"
    logical = project_at(tmp_path / "l", {
        "master.xml": xml('<include file="db/x.xml"/>'),
        "db/x.xml": inner.replace("<databaseChangeLog ", '<databaseChangeLog logicalFilePath="fixed/x.xml" ')})
    assert logical.changesets[0].filename == "fixed/x.xml"
    assert logical.changesets[0].digest != relative.changesets[0].digest


def test_only_changeset_keeps_one_changeset_and_everything_else(tmp_path: Path) -> None:
    project = project_at(tmp_path, LIBRARY)
    target = project.changesets[5]  # s2, in formatted SQL
    tree = only_changeset(project, target)
    assert set(tree) == {f.path for f in project.files}
    kept = [(path, c.id) for path, text in tree.items() if path in project.changelogs
            for c in [*parse_file(path, text).entries] if c.kind == "changeset"]
    assert kept == [("all/20-late.sql", "s2")]
    assert tree["all/20-late.sql"] == "--liquibase formatted sql\n--changeset c:s2 runAlways:true\nselect 2;\n"
    assert tree["all/15-raw.sql"] == "--liquibase formatted sql\n"  # a raw file would be a changeset
    assert '<property name="n" value="1"/>' in tree["master.xml"] and "includeAll" in tree["master.xml"]
    assert tree["data/t.csv"] == LIBRARY["data/t.csv"]
    for index, keep in enumerate(project.changesets):  # each reduced tree reads back as that changeset alone
        reduced = Project(project.root, tuple(type(f)(f.path, tree_text) for f in project.files
                                              for tree_text in [only_changeset(project, keep)[f.path]]),
                          project.changelogs, ())
        again = read_project(project.root, *_bundle(reduced))
        assert [c.id for c in again.changesets] == [keep.id], index


def _bundle(project: Project):  # type: ignore[no-untyped-def]
    from sqlrs.changelogs.liquibase import bundle_reader

    return bundle_reader(project.files)


def test_bad_changelogs_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        project_at(tmp_path / "a", {"master.xml": xml('<include file="gone.xml"/>')})
    with pytest.raises(UsageError, match="include cycle"):
        project_at(tmp_path / "b", {"master.xml": xml('<include file="master.xml"/>')})
    with pytest.raises(UsageError, match="twice"):
        project_at(tmp_path / "c", {"master.xml": xml(changeset("same"), changeset("same"))})
    with pytest.raises(UsageError, match="outside the search path"):
        project_at(tmp_path / "d", {"master.xml": xml('<include file="../x.xml"/>')})
    with pytest.raises(UsageError, match="not well-formed"):
        project_at(tmp_path / "e", {"master.xml": "<databaseChangeLog>"})
    with pytest.raises(UsageError, match="finds no changelog"):
        project_at(tmp_path / "f", {"master.xml": xml('<includeAll path="empty/"/>')})


def test_lb_args() -> None:
    parsed = parse_lb_args(["--log-level=info", "update", "--changelog-file", "db/master.xml",
                            "--search-path=src", "--contexts=test", "-Dx=1"])
    assert (parsed.changelog, parsed.search_path) == ("db/master.xml", "src")
    assert parsed.global_args == ["--log-level=info"]
    assert parsed.command_args == ["--contexts=test", "-Dx=1"]
    assert parse_lb_args(["update", "--changeLogFile=m.xml"]).changelog == "m.xml"
    for bad in (["update", "--changelog-file=m.xml", "--url=jdbc:x"], ["--USERNAME=u", "update"],
                ["update", "--changelog-file=m.xml", "--reference-url", "x"], ["status", "--changelog-file=m"],
                ["update"], ["--changelog-file=m.xml"]):
        with pytest.raises(CliError) as caught:
            parse_lb_args(bad)
        assert caught.value.exit_code == 2, bad
