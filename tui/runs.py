"""The app's long runs: choosing one, its progress bar, cancelling it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import work

from curator.errors import Cancelled, CuratorError
from curator.progress import CancelToken
from tui.components.choice import Choice
from tui.components.prompt import Prompt
from tui.components.task_bar import TaskBar
from tui.tasks import Job, UiReporter, dedup_job, export_job, model_job

if TYPE_CHECKING:
    from tui.app import ReviewApp

WORK_CHOICES = [
    ("tag", "Tag with a tagger (WD14 / DeepDanbooru preset, folder or .onnx)"),
    ("detect:nsfw", "Detect NSFW"),
    ("detect:text", "Detect text and watermarks"),
    ("detect:faces", "Detect faces"),
    ("dedup", "Find and mark duplicates (perceptual hash)"),
    ("export", "Export a training set"),
]


class RunsMixin:
    """Mixed into `ReviewApp`: one run at a time, in a worker thread."""

    def action_work(self: ReviewApp) -> None:
        if self.cancel_token is not None:
            self.say("a run is already going; C cancels it", error=True)
            return
        query = self.listing.query

        def chosen(choice: str | None) -> None:
            if choice is None:
                return
            if choice == "tag":
                self.push_screen(
                    Prompt("Tagger (preset name, folder or .onnx file)", "wd-vit-tagger-v3"),
                    lambda spec: (
                        spec and self.start_job(model_job(self.catalog, query, [spec], "tag"))
                    ),
                )
            elif choice.startswith("detect:"):
                detector = choice.split(":", 1)[1]
                self.start_job(model_job(self.catalog, query, [detector], "detect"))
            elif choice == "dedup":
                self.start_job(dedup_job(self.catalog, query))
            elif choice == "export":
                self.push_screen(
                    Prompt("Export into folder (layout kohya)", placeholder="/path/to/dataset"),
                    lambda target: (
                        target and self.start_job(export_job(self.catalog, query, target, "kohya"))
                    ),
                )

        scope = f"{self.listing.count():,} filtered images"
        self.push_screen(Choice(f"Run on the {scope}", WORK_CHOICES), chosen)

    def start_job(self: ReviewApp, job: Job) -> None:
        if self.cancel_token is not None:
            self.say("a run is already going; C cancels it", error=True)
            return
        self.cancel_token = CancelToken()
        bar = self.part("#task-bar", TaskBar)
        bar.begin(job.title, None)
        self.say(f"started: {job.title} (C cancels)")
        self._run_job(job, self.cancel_token)

    @work(thread=True, exclusive=True, group="long")
    def _run_job(self: ReviewApp, job: Job, token: CancelToken) -> None:
        bar = self.part("#task-bar", TaskBar)
        reporter = UiReporter(
            self.call_from_thread,
            bar.begin,
            bar.set_total,
            bar.advance,
            lambda: self.refresh_list(announce=False),
        )
        try:
            line, error = job.run(reporter, token), False
        except Cancelled:
            line, error = f"cancelled: {job.title}; finished work is saved", False
        except CuratorError as exc:
            line, error = f"error: {exc}", True
        except Exception as exc:  # a model or a file the library did not expect
            line, error = f"error: {type(exc).__name__}: {exc}", True
        self.call_from_thread(self._job_done, line, error)

    def _job_done(self: ReviewApp, line: str, error: bool) -> None:
        self.cancel_token = None
        self.part("#task-bar", TaskBar).end()
        self.say(line, error=error)
        self.refresh_list(announce=False)

    def action_cancel_work(self: ReviewApp) -> None:
        if self.cancel_token is None:
            self.say("no run to cancel", notify=False)
            return
        self.cancel_token.cancel()
        self.say("cancelling after the current batch…")

    def on_task_bar_cancel_pressed(self: ReviewApp, event: TaskBar.CancelPressed) -> None:
        self.action_cancel_work()
