"""Training and evaluation on mmengine. The only package (with `harness.data`) that imports
mmengine / mmaction."""
