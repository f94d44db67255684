"""Print, as JSON, where this interpreter's torch lives (roles/chatterbox, keep mode).

Never fails: errors go in the JSON. Runs on the host's interpreter, so it uses the standard library only."""

import importlib.metadata as md
import json
import os
import sys
import sysconfig
import warnings

warnings.filterwarnings("ignore")

out = {
    "python": "{}.{}".format(*sys.version_info[:2]),
    "executable": sys.executable,
    "purelib": sysconfig.get_paths()["purelib"],
}
try:
    import torch
except Exception as exc:  # report any import failure
    out["error"] = f"{type(exc).__name__}: {exc}"
else:
    out["torch"] = md.version("torch")
    out["torch_version"] = torch.__version__
    out["torch_dir"] = os.path.realpath(os.path.dirname(os.path.dirname(os.path.abspath(torch.__file__))))
    try:
        out["torchaudio"] = md.version("torchaudio")
    except md.PackageNotFoundError:
        out["torchaudio"] = None
    out["cuda"] = torch.version.cuda
    dirs = [out["torch_dir"]] + [
        p for p in sys.path if p and os.path.isdir(p) and os.path.basename(p) in ("site-packages", "dist-packages")
    ]
    out["site_dirs"] = list(dict.fromkeys(os.path.realpath(d) for d in dirs))
print(json.dumps(out))
