"""A row-cursor DataTable that asks for the next or previous page when the cursor runs off either end.

The table only ever holds one page of rows; the screen that owns it loads pages from the store on request.
"""

from __future__ import annotations

from textual.message import Message
from textual.widgets import DataTable


class PagedTable(DataTable):
    """DataTable holding one page; moving past its last (first) row posts `PageRequest(+1)` (`-1`)."""

    class PageRequest(Message):
        """The cursor ran off the page: load the page `step` pages away."""

        def __init__(self, step: int) -> None:
            super().__init__()
            self.step = step

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)  # type: ignore[arg-type]

    def action_cursor_down(self) -> None:
        if self.row_count and self.cursor_row >= self.row_count - 1:
            self.post_message(self.PageRequest(+1))
            return
        super().action_cursor_down()

    def action_cursor_up(self) -> None:
        if self.row_count and self.cursor_row <= 0:
            self.post_message(self.PageRequest(-1))
            return
        super().action_cursor_up()
