"""The run report: one self-contained HTML page of a run (``vqvae report``).

:mod:`vqvae.report.build` makes the page; the modalities add their sections from
:mod:`vqvae.report.sections` and sample priors with :mod:`vqvae.report.draws`. This
package's import stays light (no plotting or templates) because every modality imports it.
"""

from vqvae.report.sections import Clip, Picture, Section, Table, png_bytes

__all__ = ["Clip", "Picture", "Section", "Table", "png_bytes"]
