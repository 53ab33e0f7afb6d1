import time, torch, copy, numpy as np, sys
sys.path.insert(0, "scripts")
from order_probe import load_split, frames_of
from harness.backbone import create_clip, get_tokenizer
from harness.data.embedded import ensure_embedded_dataset
from methods.registry import build_method
torch.set_num_threads(1)
clip, spec = create_clip("harness-tiny", pretrained="synthetic"); tok = get_tokenizer(spec)
root = ensure_embedded_dataset(); x, y = load_split(root, "val")
import av
t=time.perf_counter()
for f in sorted((root/"videos").glob("val_*.mp4"))[:48]:
    with av.open(str(f)) as c: [fr.to_ndarray(format="rgb24") for fr in c.decode(video=0)]
print("decode per video ms", 1000*(time.perf_counter()-t)/48)
for m in ["zeroshot", "st_adapter", "aim", "msta"]:
    net = build_method(m, copy.deepcopy(clip), tok, 8, {}, None).eval()
    v = frames_of(x[:32], 8, None, 64)
    with torch.no_grad():
        net.encode_video(v)
        t = time.perf_counter()
        for _ in range(3): net.encode_video(v)
    print(m, "forward per video ms", 1000*(time.perf_counter()-t)/96)
