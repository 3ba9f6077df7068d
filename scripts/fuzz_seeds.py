#!/usr/bin/env python3
"""Writes seed corpora for the fuzz targets from the test fixtures.

Usage: fuzz_seeds.py FIXTURES_DIR OUT_DIR

Each target gets OUT_DIR/<target>/: small files cut from the fixtures (so
that mutations stay fast) and a few inputs built here. Nothing is written
into the repository.
"""
import json
import pathlib
import pickle
import pickletools
import struct
import sys
import zipfile


def write(folder, name, data):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def safetensors_seeds(fixtures, out):
    """Write each fixture's header as it is (so every data range is past the
    end), and a valid file of the tensors in its first 4 KiB of data."""
    files = sorted(fixtures.glob("tiny/*.safetensors")) + sorted(fixtures.glob("ckpt/*.safetensors"))
    for path in files:
        data = path.read_bytes()
        header_len = struct.unpack("<Q", data[:8])[0]
        write(out, path.stem + ".header", data[: 8 + header_len])
        header = json.loads(data[8 : 8 + header_len])
        tensors = sorted(
            ((k, v) for k, v in header.items() if k != "__metadata__"),
            key=lambda kv: kv[1]["data_offsets"][0],
        )
        kept = {k: v for k, v in header.items() if k == "__metadata__"}
        end = 0
        for key, value in tensors:
            begin, stop = value["data_offsets"]
            if begin != end or stop > 4096:
                break
            kept[key] = value
            end = stop
        text = json.dumps(kept, separators=(",", ":")).encode()
        start = 8 + header_len
        write(out, path.stem + ".small", struct.pack("<Q", len(text)) + text + data[start : start + end])


def short(text):
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def global_op(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def tensor_pickle(numel, persistent_id_items):
    """Return a protocol-2 pickle of {"w": tensor} over FloatStorage "0", as
    torch.save writes it."""
    storage = (
        b"(" + short("storage") + global_op("torch", "FloatStorage") + short("0") + short("cpu")
        + b"K" + bytes([numel]) + (b"N" if persistent_id_items == 6 else b"") + b"tQ"
    )
    return (
        b"\x80\x02}(" + short("w") + global_op("torch._utils", "_rebuild_tensor_v2") + b"(" + storage
        + b"K\x00K" + bytes([numel]) + b"\x85K\x01\x85\x89" + global_op("collections", "OrderedDict")
        + b")RtRu."
    )


def ckpt_seeds(fixtures, out):
    for path in sorted(fixtures.glob("ckpt/*.ckpt")):
        if path.stat().st_size < 65536:
            write(out, path.name, path.read_bytes())
    floats = struct.pack("<4f", 0.0, 1.0, 2.0, 3.0)
    zip_path = out / "synthetic-zip.ckpt"
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("synthetic/data.pkl", tensor_pickle(4, 5))
        archive.writestr("synthetic/data/0", floats)
        archive.writestr("synthetic/version", b"3\n")
    legacy = (
        pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
        + pickle.dumps(1001, protocol=2)
        + pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)
        + tensor_pickle(4, 6)
        + pickle.dumps(["0"], protocol=2)
        + struct.pack("<Q", 4) + floats
    )
    write(out, "synthetic-legacy.ckpt", legacy)


def pickle_seeds(fixtures, out):
    """Write the data.pkl of every zip checkpoint and the pickles of legacy ones."""
    for path in sorted(fixtures.glob("ckpt/*.ckpt")):
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for name in archive.namelist():
                    if name.endswith("data.pkl"):
                        write(out, path.stem + ".pkl", archive.read(name))
            continue
        data = path.read_bytes()
        pos = 0
        for index in range(5):
            stop = pos
            for opcode, _, at in pickletools.genops(data[pos:]):
                if opcode.name == "STOP":
                    stop = pos + at + 1
                    break
            write(out, "%s.%d.pkl" % (path.stem, index), data[pos:stop])
            pos = stop
    write(out, "synthetic-tensor.pkl", tensor_pickle(4, 5))
    write(out, "plain-containers.pkl", pickle.dumps({"a": [1, 2.5, None, True], "b": ("x", b"y")}, protocol=2))
    write(out, "protocol4.pkl", pickle.dumps({"k": list(range(5)), "big": 1 << 70}, protocol=4))


def varint(value):
    out = b""
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def field(number, payload):
    """Encode a protobuf field: an int as a varint, bytes as length-delimited."""
    if isinstance(payload, int):
        return varint(number << 3) + varint(payload)
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def onnx_model(initializers):
    """Encode a ModelProto (IR 8, opset 17) whose graph has only `initializers`."""
    graph = field(2, b"g") + b"".join(field(5, tensor) for tensor in initializers)
    opset = field(1, b"") + field(2, 17)
    return field(1, 8) + field(2, b"fuzz") + field(7, graph) + field(8, opset)


def onnx_seeds(out):
    """Write small models with raw data, typed float_data, and external data in
    the weights.bin file that the fuzz target writes beside each input."""
    raw = field(1, 2) + field(1, 2) + field(2, 1) + field(8, b"raw") + field(9, struct.pack("<4f", 1, 2, 3, 4))
    typed = field(1, 3) + field(2, 1) + field(4, struct.pack("<3f", 1, 2, 3)) + field(8, b"typed")
    entries = [(b"location", b"weights.bin"), (b"offset", b"64"), (b"length", b"16")]
    external = field(1, 4) + field(2, 1) + field(8, b"external") + field(14, 1) + b"".join(
        field(13, field(1, key) + field(2, value)) for key, value in entries
    )
    half = field(1, 2) + field(2, 10) + field(8, b"half") + field(9, b"\x00\x3c\x00\x40")
    write(out, "raw.onnx", onnx_model([raw]))
    write(out, "typed.onnx", onnx_model([typed]))
    write(out, "external.onnx", onnx_model([external]))
    write(out, "mixed.onnx", onnx_model([raw, typed, external, half]))


def text_seeds(fixtures, out):
    cases = json.loads((fixtures / "clip" / "tokenizer-cases.json").read_text())
    entries = cases if isinstance(cases, list) else cases.get("cases", [])
    for index, case in enumerate(entries):
        text = case.get("prompt", case.get("text")) if isinstance(case, dict) else case[0]
        if isinstance(text, str):
            write(out, "case-%02d.txt" % index, text.encode())
    write(out, "emphasis.txt", b"a (red:1.2) fox, [blurry], ((sharp)) BREAK \\(literal\\) snow")
    write(out, "invalid-utf8.txt", b"caf\xc3 \xff\xfe (\xe2\x82:1.1)")


def main():
    fixtures, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    safetensors_seeds(fixtures, out / "fuzz_safetensors")
    pickle_seeds(fixtures, out / "fuzz_pickle")
    ckpt_seeds(fixtures, out / "fuzz_torch_checkpoint")
    onnx_seeds(out / "fuzz_onnx_file")
    text_seeds(fixtures, out / "fuzz_tokenizer")
    text_seeds(fixtures, out / "fuzz_prompt")


if __name__ == "__main__":
    main()
