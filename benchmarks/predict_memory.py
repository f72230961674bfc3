"""Peak memory of `kexp predict` on large inputs: it must stream, so memory stays bounded.

    KEXP_DATA_DIR=../shared/data NLTK_DATA=../shared/nltk_data python benchmarks/predict_memory.py [--mb 40]

Trains configs/sms_spam.yaml once, writes a text file of about --mb MB of SMS-like lines (the
collection's messages repeated, each line numbered so every answer can be matched), and runs
`kexp predict RUN FILE -o out.jsonl` under /usr/bin/time -v. Checks that every line is answered,
in order, and records the seconds and peak RSS in benchmarks/results/predict_memory.json.
Target (issue 23): 40 MB of text at <= 1.5 GB peak RSS.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, environment, peak_rss_mb, printed_run_dir, write_result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=40.0)
    args = parser.parse_args()
    env = environment()
    tmp = Path(tempfile.mkdtemp(prefix="kexp-predict-memory-"))
    train = subprocess.run([sys.executable, "-m", "kexp", "train", "configs/sms_spam.yaml", "--runs-dir", str(tmp / "runs"), "--log-format", "plain"],
                           capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    run = printed_run_dir(train.stdout)
    messages = [line.split("\t", 1)[1] for line in (Path(env["KEXP_DATA_DIR"]) / "sms" / "SMSSpamCollection").read_text(encoding="utf-8").splitlines()]
    source = tmp / "inputs.txt"
    lines = 0
    with open(source, "w", encoding="utf-8") as f:
        while f.tell() < args.mb * 1e6:
            f.write(f"{messages[lines % len(messages)]} #{lines}\n")
            lines += 1
    started = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "kexp", "predict", str(run), str(source), "-o", str(tmp / "out.jsonl")],
                            capture_output=True, text=True, cwd=ROOT, env=env)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"kexp predict failed: {result.stderr[-2000:]}")
    with open(tmp / "out.jsonl", encoding="utf-8") as f:
        answered = [json.loads(line)["input"] for line in f]
    in_order = [int(name.split(" ", 1)[0].rsplit(":", 1)[1]) for name in answered] == list(range(1, lines + 1))
    data = {"input_mb": round(source.stat().st_size / 1e6, 1), "lines": lines, "answered": len(answered), "in_order": in_order,
            "seconds": round(seconds, 1), "peak_rss_mb": peak_rss_mb(result.stderr), "target_peak_rss_mb": 1536}
    print(json.dumps(data, indent=2))
    write_result("predict_memory", data)
    os.system(f"rm -rf {tmp}")


if __name__ == "__main__":
    main()
