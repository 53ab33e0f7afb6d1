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
                             splits_root=args.splits_root, cache_dir=args.cache, activation=args.activation,
                             allow_base_mismatch=args.allow_base_mismatch)
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
    act = report["activation"]
    lines = [f"{report['from']} -> method {meta['method']} ({meta['frames']} frames), backbone "
             f"{meta['backbone']['resolved_name']} / {meta['backbone']['pretrained']}",
             f"activation: {act['why']}",
             f"release: {rel['keys']} keys {json.dumps(rel['dtypes'])}, unwrapped {rel['unwrapped'] or '-'}, "
             f"prefixes stripped {rel['stripped_prefixes'] or '-'}"]
    lines.extend(f"read {line}" for line in rel.get("read", []))
    if report["from_config"]:
        lines.append(f"from the release's {rel.get('config_from')} ({rel.get('config_kind')}): "
                     + ", ".join(f"{k}={v}" for k, v in report["from_config"].items()))
    lines.append(f"parameters: {report['filled_from_release']} from the release, {report['filled_from_base']} from the base")
    for key, reason in report["ignored"].items():
        lines.append(f"ignored {key}: {reason}")
    for key, check in report["derived"].items():
        lines.append(f"checked {key}: max |diff| {check['max_abs_diff']:.3g} ({check['how']})")
    lines.append(frozen_line(report, meta["backbone"]["pretrained"]))
    for dtype, count in report["from_base_rounded"].items():
        lines.append(f"frozen weights from --base rounded to {dtype} ({count} parameters), as the official model "
                     "holds them")
    for option, assumed in report["assumed"].items():
        others = "; ".join(f"{value}: {where}" for value, where in assumed["alternatives"].items())
        lines.append(f"assumed {meta['method']}.{option}={assumed['value']} ({assumed['why']}); other official "
                     f"values: {others}; choose with {assumed['how']}")
    lines.extend(f"note: {n}" for n in report["notes"])
    return "\n".join(lines)


def frozen_line(report: dict, base: str | None) -> str:
    """What the frozen-weights check found, in one line."""
    diff = report.get("frozen_vs_base")
    if diff:
        verdict = ("within fp16 rounding" if not diff["beyond_fp16"] else
                   f"BEYOND fp16 rounding in {diff['mismatched_parameters']} parameter(s), converted with "
                   "--allow-base-mismatch")
        return (f"frozen weights vs --base: largest |diff| {diff['max_abs_diff']:.3g} at {diff['official_key']} "
                f"({diff['compared_parameters']} compared, {verdict})")
    if not report["frozen_in_release"]:
        return ("frozen weights: none in the release (it holds trained tensors only)"
                + ("; the frozen ones come from --base" if base else ""))
    return "frozen weights not verified (no --base)" if not base else "frozen weights: none comparable with --base"
