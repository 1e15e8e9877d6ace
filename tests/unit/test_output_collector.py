"""A step's output as job events: whole lines, one event per read (or per window), the first lines only."""

from __future__ import annotations

from sqlrs.services.states.steps.output import OUTPUT_LINES_KEPT, OutputCollector


def collect() -> tuple[OutputCollector, list[tuple[str, str]]]:
    events: list[tuple[str, str]] = []
    return OutputCollector(lambda stream, text: events.append((stream, text))), events


def test_lines_of_one_read_are_one_event_and_partial_lines_wait() -> None:
    collector, events = collect()
    collector.feed("stdout", b"CREATE TABLE\nCREATE INDEX\nALTER")
    collector.feed("stdout", b" TABLE\n")
    collector.feed("stderr", b"NOTICE: x")
    collector.flush()
    assert events == [("stdout", "CREATE TABLE\nCREATE INDEX"), ("stdout", "ALTER TABLE"), ("stderr", "NOTICE: x")]
    assert collector.text() == "CREATE TABLE\nCREATE INDEX\nALTER TABLE\nNOTICE: x"


def test_output_beyond_the_limit_is_kept_for_errors_but_not_forwarded() -> None:
    collector, events = collect()
    collector.feed("stdout", "".join(f"line {i}\n" for i in range(OUTPUT_LINES_KEPT - 1)).encode())
    collector.feed("stdout", b"last shown\nfirst hidden\n")
    collector.feed("stdout", b"later\n")
    forwarded = "\n".join(text for stream, text in events if stream == "stdout").splitlines()
    assert len(forwarded) == OUTPUT_LINES_KEPT and forwarded[-1] == "last shown"
    assert [e for e in events if e[0] == "note"] == [("note", "(more output not shown)")]
    assert collector.text().endswith("first hidden\nlater")


def test_with_a_window_the_lines_of_several_reads_share_an_event_until_the_oldest_waited_for_it() -> None:
    now = [0.0]
    events: list[tuple[str, str]] = []
    collector = OutputCollector(lambda stream, text: events.append((stream, text)), window=0.1, clock=lambda: now[0])
    collector.feed("stdout", b"CREATE TABLE\n")
    now[0] = 0.05
    collector.feed("stdout", b"CREATE INDEX\n")
    collector.feed("stderr", b"NOTICE: x\n")
    collector.feed("stdout", b"ALTER TABLE\n")
    collector.tick()
    assert events == []  # the oldest line waited 0.05 s
    now[0] = 0.1
    collector.tick()  # the tool is quiet: what waited for the window goes, in the order it came
    assert events == [("stdout", "CREATE TABLE\nCREATE INDEX"), ("stderr", "NOTICE: x"), ("stdout", "ALTER TABLE")]
    collector.feed("stdout", b"COMMIT\n")
    collector.tick()
    assert len(events) == 3  # a new window starts with the next line
    collector.flush()  # the step's end forwards the rest
    assert events[3:] == [("stdout", "COMMIT")]
