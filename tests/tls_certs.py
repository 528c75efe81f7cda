"""Test certificates made with the openssl CLI: a CA, the sidecar's server certificate, Envoy's client one."""

import subprocess
from pathlib import Path


def _run(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_certs(folder: Path, server_name: str = "llm-extproc") -> dict[str, Path]:
    paths = {
        name: folder / name
        for name in (
            "ca.key",
            "ca.crt",
            "server.key",
            "server.crt",
            "client.key",
            "client.crt",
            "other-ca.key",
            "other-ca.crt",
        )
    }
    for ca in ("ca", "other-ca"):
        _run(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={ca}",
            "-keyout",
            str(paths[f"{ca}.key"]),
            "-out",
            str(paths[f"{ca}.crt"]),
        )
    for leaf, extension in (
        ("server", f"subjectAltName=DNS:{server_name},IP:127.0.0.1"),
        ("client", "subjectAltName=DNS:envoy"),
    ):
        csr = folder / f"{leaf}.csr"
        _run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={leaf}",
            "-keyout",
            str(paths[f"{leaf}.key"]),
            "-out",
            str(csr),
        )
        ext = folder / f"{leaf}.ext"
        ext.write_text(extension + "\n")
        _run(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(paths["ca.crt"]),
            "-CAkey",
            str(paths["ca.key"]),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            str(ext),
            "-out",
            str(paths[f"{leaf}.crt"]),
        )
    return paths
