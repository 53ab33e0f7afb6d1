"""`harness convert`: official released checkpoints -> checkpoints of this project's modules.

One converter per official code base (`adapters`, `vitaclip`, `vificlip`, `xclip`, `froster`,
`mote`, `ost`), one shared pipeline
(`base`, `mapping`, `release`), the reader of release files as the official code writes them
(`release_io`: pickled configuration objects as plain data, no pickled code run), and
`checkpoint` to save and load the result (also run checkpoints), which `harness predict` and
evaluation (`evaluate`: the model source of `harness eval` jobs) use.
"""
from __future__ import annotations

from harness.convert.base import Conversion, Converter, ConvertRequest
from harness.errors import unknown_name_error


def converters() -> dict[str, type[Converter]]:
    from harness.convert.adapters import AIMConverter, STAdapterConverter
    from harness.convert.froster import FROSTERConverter
    from harness.convert.mote import MoTEConverter
    from harness.convert.ost import OSTConverter
    from harness.convert.vificlip import ViFiCLIPConverter, ViFiCLIPPromptConverter
    from harness.convert.vitaclip import VitaCLIPConverter
    from harness.convert.xclip import XCLIPConverter

    return {c.name: c for c in (STAdapterConverter, AIMConverter, VitaCLIPConverter, ViFiCLIPConverter,
                                ViFiCLIPPromptConverter, XCLIPConverter, FROSTERConverter,
                                MoTEConverter, OSTConverter)}


def convert(source: str, request: ConvertRequest) -> Conversion:
    """Convert `request.checkpoint`, a release of official code base `source`."""
    table = converters()
    if source not in table:
        raise unknown_name_error("--from source", source, table)
    return table[source](request).convert()


__all__ = ["ConvertRequest", "Conversion", "convert", "converters"]
