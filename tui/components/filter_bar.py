"""The filter bar: a query in the catalog's query language, applied on Enter."""

from __future__ import annotations

from textual.message import Message
from textual.widgets import Input


class FilterBar(Input):
    """Enter applies the query; Esc (the app's key) returns to the list unchanged."""

    class Applied(Message):
        def __init__(self, query: str) -> None:
            super().__init__()
            self.query = query

    def __init__(self, query: str = "", *, id: str | None = None) -> None:
        super().__init__(
            value=query,
            placeholder="filter: e.g. 1girl -monochrome status:pending score(aesthetic)>5",
            id=id,
        )

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Applied(event.value.strip()))
