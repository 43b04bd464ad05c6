"""docs/isa.md is exactly what ``python -m hw.docs`` generates from the ISA tables."""

import re

import pytest

from hw import docs, isa


@pytest.fixture(scope="module")
def text():
    return docs.render()


def test_committed_document_is_up_to_date(text):
    assert docs.DEFAULT_OUTPUT.read_text() == text, \
        "docs/isa.md is stale: run `python -m hw.docs` and commit the result"


def test_check_mode_detects_a_stale_file(tmp_path):
    stale = tmp_path / "isa.md"
    stale.write_text(docs.render().replace("| 32 |", "| 31 |", 1))
    assert docs.main(["--output", str(stale), "--check"]) == 1
    assert docs.main(["--output", str(stale)]) == 0
    assert docs.main(["--output", str(stale), "--check"]) == 0
    assert stale.read_text() == docs.render()


def table_rows(text, heading):
    """Data rows of the first table after ``heading``, as lists of stripped cells."""
    lines = text.split(heading + "\n", 1)[1].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows[2:]   # after the header and the separator


def bit_range(cell):
    """The bits a cell such as `[19:4]` or `[52]` names."""
    high, low = re.fullmatch(r"`\[(\d+)(?::(\d+))?\]`", cell).groups()
    return range(int(high if low is None else low), int(high) + 1)


@pytest.mark.parametrize("cls", list(isa.INSTRUCTIONS.values()), ids=lambda c: c.OPCODE.name)
def test_instruction_tables_give_every_field_and_its_bits(text, cls):
    rows = table_rows(text, f"### {cls.OPCODE.name}")
    by_name = {row[1].strip("`"): row for row in rows}
    assert bit_range(by_name["opcode"][0]) == range(0, isa.OPCODE_WIDTH)
    for f in cls.FIELDS:
        offset, width = cls.field_offsets()[f.name]
        row = by_name[f.name]
        assert bit_range(row[0]) == range(offset, offset + width)
        assert row[2] == str(f.width)
        assert row[4] == f.doc
    # The table covers the whole word, with no gaps or overlaps.
    assert sorted(bit for row in rows for bit in bit_range(row[0])) == list(range(64))
    assert cls.DOC in text


def test_opcode_summary_lists_every_opcode(text):
    rows = table_rows(text, "## Opcodes")
    assert [int(row[0]) for row in rows] == sorted(isa.INSTRUCTIONS)
    for row in rows:
        cls = isa.INSTRUCTIONS[int(row[0])]
        assert row[2] == str(cls.used_bits())
        assert row[5] == ("yes" if cls.OPCODE in isa.ALWAYS_EXECUTED else "—")


@pytest.mark.parametrize("heading, fields", [("## Requantization record", isa.PARAM_FIELDS),
                                             ("## Status record", isa.STATUS_FIELDS)])
def test_record_tables(text, heading, fields):
    rows = table_rows(text, heading)
    assert [row[1].strip("`") for row in rows] == [f.name for f in fields]
    offset = 0
    for row, f in zip(rows, fields, strict=True):
        assert bit_range(row[0]) == range(offset, offset + f.width)
        offset += f.width


def test_error_codes_and_rules(text):
    rows = table_rows(text, "## Error codes")
    assert [(int(row[0]), row[1], row[2]) for row in rows] == [
        (int(code), f"`{code.name}`", code.description) for code in isa.ErrorCode]
    rules = text.split("## Sticky errors", 1)[1]
    for opcode in isa.ALWAYS_EXECUTED:
        assert f"`{opcode.name}`" in rules
    assert "CLEAR_ERROR" in rules


def test_rounding_modes_listed(text):
    rows = table_rows(text, "### Rounding modes")
    assert [(int(row[0]), row[1]) for row in rows] == [(int(r), f"`{r.name}`")
                                                      for r in isa.Rounding]
    assert all(row[2] for row in rows)   # each mode explained


@pytest.mark.parametrize("cls", list(isa.INSTRUCTIONS.values()), ids=lambda c: c.OPCODE.name)
def test_instruction_checks_are_the_rules(text, cls):
    """Each instruction lists its reserved-bit check and then its rules, in order."""
    section = text.split(f"### {cls.OPCODE.name}\n", 1)[1].split("\n### ", 1)[0]
    after = section.split("\nChecks, in the order they are made", 1)[1].split("\n", 1)[1]
    rows = table_rows("Checks\n" + after, "Checks")
    spare = range(cls.used_bits(), 64)
    assert rows[0][0] == f"`{isa.ErrorCode.RESERVED_BITS.name}`"
    assert bit_range(rows[0][1].removeprefix("a bit of ").removesuffix(" is set")) == spare
    assert [(row[0].strip("`"), row[1]) for row in rows[1:]] == [
        (rule.error.name, docs._cell(rule.doc)) for rule in cls.RULES]
