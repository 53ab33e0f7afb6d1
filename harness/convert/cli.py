"""`harness convert`: flags -> ConvertRequest -> converted checkpoint + report (JSON beside it)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.errors import HarnessError


def method_sets(sets: list[str], method: str) -> dict:
    """`--set <method>.<option>=v` items -> options of `method` (validated by the registry)."""
    from harness.settings import parse_set_args

    options, schedule, data = parse_set_args(sets, [method])
    if schedule or data:
        raise HarnessError(f"only {method}.<option>=value overrides apply here")
    return options.get(method, {})


def convert_command(args: argparse.Namespace) -> int:
    from harness.atomic import atomic_write_json
    from harness.convert import ConvertRequest, convert, converters
    from harness.convert.base import parse_classes
    from harness.convert.checkpoint import save_converted

    table = converters()
    if args.source not in table:
        from harness.errors import unknown_name_error

        raise unknown_name_error("--from source", args.source, table)
    method = table[args.source].method
    request = ConvertRequest(checkpoint=args.checkpoint, backbone=args.backbone, base=args.base, frames=args.frames,
                             options=method_sets(args.sets, method),
                             classes=parse_classes(args.classes) if args.classes else None,
                             splits_root=args.splits_root, cache_dir=args.cache)
    conversion = convert(args.source, request)
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".harness.pt")
    if out.resolve() == Path(args.checkpoint).resolve():
        raise HarnessError(f"--out {out} would overwrite the release; choose another file")
    save_converted(conversion, out)
    report_path = out.with_name(out.name + ".json")
    atomic_write_json(report_path, conversion.meta["conversion"])
    print(format_report(conversion.meta))
    print(f"wrote {out} (report: {report_path})")
    return 0


def format_report(meta: dict) -> str:
    report = meta["conversion"]
    rel = report["release"]
    lines = [f"{report['from']} -> method {meta['method']} ({meta['frames']} frames), backbone "
             f"{meta['backbone']['resolved_name']} / {meta['backbone']['pretrained']}",
             f"release: {rel['keys']} keys {json.dumps(rel['dtypes'])}, unwrapped {rel['unwrapped'] or '-'}, "
             f"prefixes stripped {rel['stripped_prefixes'] or '-'}",
             f"parameters: {report['filled_from_release']} from the release, {report['filled_from_base']} from the base"]
    for key, reason in report["ignored"].items():
        lines.append(f"ignored {key}: {reason}")
    for key, check in report["derived"].items():
        lines.append(f"checked {key}: max |diff| {check['max_abs_diff']:.3g} ({check['how']})")
    diff = report.get("frozen_vs_base")
    if diff:
        lines.append(f"frozen weights vs --base: largest |diff| {diff['max_abs_diff']:.3g} at {diff['official_key']} "
                     f"({diff['compared_parameters']} compared)")
    elif meta["backbone"].get("pretrained"):
        lines.append("frozen weights vs --base: the release fills no frozen parameter (full fine-tuning)")
    else:
        lines.append("frozen weights not verified (no --base)")
    lines.extend(f"note: {n}" for n in report["notes"])
    return "\n".join(lines)
