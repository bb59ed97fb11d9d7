"""What a `wsol data prepare` run has verified so far, so a rerun after an interruption skips it.

One line per verified file (`path<TAB>bytes`) and one per finished ILSVRC class tar
(`#class<TAB>wnid`), appended and flushed as the work goes. A file counts as done only while
its size on disk still equals the recorded one; anything else is verified again.
"""

from __future__ import annotations

from pathlib import Path

FOLDER = ".wsol-prepare"
CLASS_MARK = "#class"


class Journal:
    def __init__(self, out: Path):
        self.out = out
        self.path = out / FOLDER / "verified.tsv"
        self.sizes: dict[str, int] = {}
        self.classes: set[str] = set()
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                key, _, value = line.partition("\t")
                if key == CLASS_MARK:
                    self.classes.add(value)
                elif value.isdigit():
                    self.sizes[key] = int(value)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("a", encoding="utf-8")

    def done(self, entry: str) -> bool:
        """Verified by an earlier run, and still the file that was verified."""
        recorded = self.sizes.get(entry)
        if recorded is None:
            return False
        try:
            return (self.out / entry).stat().st_size == recorded
        except OSError:
            return False

    def add(self, entry: str, size: int) -> None:
        self.sizes[entry] = size
        self._append(f"{entry}\t{size}")

    def finish_class(self, wnid: str) -> None:
        self.classes.add(wnid)
        self._append(f"{CLASS_MARK}\t{wnid}")

    def _append(self, line: str) -> None:
        self._handle.write(line + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()
