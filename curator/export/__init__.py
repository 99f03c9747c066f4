"""`curator export`: a bucketed, cropped, captioned training set in a trainer's layout.

What gets exported: the images matching ``query`` (see `curator.query.compile`) that have a
file on disk, are not marked as a duplicate of another image and are not
``rejected`` in review (``include_rejected`` keeps those). With ``reg_query`` a second
selection becomes the regularisation (class) images of a DreamBooth layout.

For every image: a bucket (`curator.export.buckets`, on its displayed size), a crop
(`curator.export.crops`; ``focal`` keeps the face boxes of the ``faces`` detector), a caption
(`curator.export.captions`, from `curator.tags.view.effective_tags`, trigger-word rules first),
then a worker process decodes, crops, resizes and writes it (`curator.media.imagewrite`).
An image that cannot be read, has changed since it was scanned or fits no bucket is
skipped and listed with the reason; the export goes on. Source files are only read.

The export is written into a new folder beside the target and moved into place when
complete, so a target holds a whole export or none. A non-empty target is refused
unless ``force`` is given; even then it is replaced only if it is a previous Curator
export that nobody has added files to (it has our ``manifest.json`` and nothing
besides the files listed there). With ``overwrite``, any other folder is moved aside
to ``NAME.old-N`` (never deleted) and the export takes its place. An image that cannot
be *written* (a full disk, a file size limit, no permission) fails the whole export:
nothing is moved into place or recorded. A replacement killed between its two renames
is finished by the next export of that target, which also removes hidden folders left
by exports that were killed. ``cancel`` stops between images and leaves no target.

`preview_export` plans the same export without writing (``--dry-run``, ``--check``);
with ``strict`` an export with findings is refused.

Same catalog, options and seed give byte-identical files: names come from the source
file name (or content hash), everything is sorted, and nothing written holds a time
(diffusers' ``dataset_name`` is the one absolute path written without ``absolute_paths``:
`datasets` cannot load ``"."``).
`manifest.json` lists every file with its SHA-256 and source image, the settings, the
bucket histogram, counts and skipped images. The catalog records the export in
``exports`` and each image's bucket, crop, path and caption in ``export_items``; a
crop moved by hand there is used by `reexport` (or ``reuse_crops=EXPORT_ID``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from curator.export.options import ExportOptions, ExportSummary, SkippedImage

if TYPE_CHECKING:
    from db.engine import Catalog

__all__ = [
    "ExportOptions",
    "ExportSummary",
    "SkippedImage",
    "export",
    "preview_export",
    "reexport",
]

# The orchestration is imported when called: worker processes import this package to
# reach `curator.export.render`, and need neither the database layer nor the layouts.


def export(
    catalog: Catalog,
    target_dir: str | os.PathLike[str],
    options: ExportOptions | None = None,
    /,
    **settings: Any,
) -> ExportSummary:
    """Export the images of ``query`` into ``target_dir``; see the module doc.

    ``settings`` are `ExportOptions` fields (``query=``, ``layout=``, ``crop=``, ...),
    applied over ``options``. Raises `ExportError` when the target is not empty (without
    ``force``) or nothing could be exported, `UsageError` for settings that do not fit.
    """
    from curator.export.run import run_export

    return run_export(catalog, target_dir, options, **settings)


def preview_export(
    catalog: Catalog,
    target_dir: str | os.PathLike[str],
    options: ExportOptions | None = None,
    /,
    **settings: Any,
) -> Any:
    """What `export` would write, and the pre-flight findings, without writing anything.

    Returns a `curator.export.check.ExportPreview`: the bucket histogram, every image's
    bucket, crop and scale, and findings (uncaptioned images, buckets smaller than the
    batch size, upscaled images, images under the minimum side, and caption files an
    existing export's ``dataset.toml`` would not read).
    """
    from curator.export.check import preview_export as _preview

    return _preview(catalog, target_dir, options, **settings)


def reexport(
    catalog: Catalog,
    export_id: int,
    target_dir: str | os.PathLike[str] | None = None,
    /,
    **changes: Any,
) -> ExportSummary:
    """Export again with a recorded export's settings and its stored (maybe moved) crops.

    ``target_dir`` defaults to the recorded target, which is replaced if it is still
    the untouched previous export (``force`` is on). ``changes`` adjust settings.
    """
    from curator.export.run import run_reexport

    return run_reexport(catalog, export_id, target_dir, **changes)
