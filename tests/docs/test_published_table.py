"""The manual's table of the papers' published numbers (docs/after/report.md, "The published
table") is wsol/lifecycle/published.yaml, entry for entry: every field a reader sees (dataset,
method, backbone, metric, the number as printed, source, table, row, note), in the file's order,
nothing more and nothing less, so that a number changed in one place fails here."""

from __future__ import annotations

import re

from manual_blocks import DOCS

from wsol.lifecycle.published import Published, load_published

PAGE = DOCS / "after" / "report.md"
HEADING = "### The published table"
COLUMNS = ("dataset", "method", "backbone", "metric", "published", "source", "table", "row",
           "note")


def page_rows(text: str) -> list[tuple[str, ...]]:
    """The rows of the first table after HEADING, cells stripped, `source`'s backticks off."""
    lines = text[text.index(HEADING):].splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("|"))
    block = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        block.append(line)
    header = tuple(cell.strip() for cell in block[0].strip("|").split("|"))
    assert header == COLUMNS, f"{PAGE.name}: the published table's columns are {header}"
    assert re.fullmatch(r"\|( --- \|)+", block[1]), block[1]
    rows = []
    for line in block[2:]:
        cells = [cell.strip() for cell in line.strip().removeprefix("|").removesuffix("|")
                 .split("|")]
        assert len(cells) == len(COLUMNS), f"{PAGE.name}: {line!r} has {len(cells)} cells"
        cells[COLUMNS.index("source")] = cells[COLUMNS.index("source")].strip("`")
        rows.append(tuple(cells))
    return rows


def yaml_rows(entries: tuple[Published, ...]) -> list[tuple[str, ...]]:
    return [(e.dataset, e.method, e.backbone, e.metric, e.printed, e.source, e.table, e.row,
             e.note) for e in entries]


def differences(page: list[tuple[str, ...]], published: list[tuple[str, ...]]) -> list[str]:
    """What one side has that the other lacks, then any difference in order."""
    only_page = [f"only on the page: {row}" for row in page if row not in published]
    only_yaml = [f"only in published.yaml: {row}" for row in published if row not in page]
    if not only_page and not only_yaml and page != published:
        return ["the same entries, in another order than published.yaml's"]
    return only_page + only_yaml


def test_the_pages_table_is_published_yaml() -> None:
    assert differences(page_rows(PAGE.read_text()), yaml_rows(load_published())) == []


def test_a_changed_added_or_dropped_entry_is_caught() -> None:
    """The check above can fail: on an altered copy of the page's text (the page is untouched)."""
    text = PAGE.read_text()
    published = yaml_rows(load_published())
    bgc_cub = "| cub | bgc | vgg16 | MaxBoxAccV2 | 80.1 | `bgc` |"
    assert text.count(bgc_cub) == 1
    changed = page_rows(text.replace(bgc_cub, bgc_cub.replace("80.1", "80.2")))
    assert differences(changed, published) == [
        "only on the page: ('cub', 'bgc', 'vgg16', 'MaxBoxAccV2', '80.2', 'bgc', 'Table 4', "
        "'Ours, CUB-200-2011 VGG16', '')",
        "only in published.yaml: ('cub', 'bgc', 'vgg16', 'MaxBoxAccV2', '80.1', 'bgc', "
        "'Table 4', 'Ours, CUB-200-2011 VGG16', '')"]
    bgc_row = next(row for row in published if row[:5] == ("cub", "bgc", "vgg16",
                                                            "MaxBoxAccV2", "80.1"))
    dropped = [row for row in page_rows(text) if row != bgc_row]
    assert differences(dropped, published) == [f"only in published.yaml: {bgc_row}"]
    assert differences([*page_rows(text), ("cub", "wsol", "x", "PxAP", "1.0", "bgc", "T", "r",
                                           "")], published)[0].startswith("only on the page")
    swapped = page_rows(text)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    assert differences(swapped, published) == [
        "the same entries, in another order than published.yaml's"]
    ivr_cub = "| `ivr` | Table 1 | CAM, Minmax, CUB VGG |"
    assert text.count(ivr_cub) == 1
    renamed = page_rows(text.replace(ivr_cub, ivr_cub.replace("ivr", "bgc")))
    assert differences(renamed, published)[0].startswith("only on the page: ('cub', 'cam'")
