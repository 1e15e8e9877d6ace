"""`StateRegistry` on an OCI distribution registry, through oras-py's `Registry`.

What oras-py 0.2 does and does not do, and so what is used here:
- `Registry.push`/`pull` (the high-level API) upload a blob with `put_upload`, which reads the
  whole file into memory (`data=fd.read()`), and download without checking the digest. Not used.
- `chunked_upload` streams a file in chunks (POST, PATCH..., PUT) but cannot resume; its
  `do_request` is wrapped in a blind retry (5 attempts, sleeps of 3 to 83 s) with no timeouts.
- Used: `Registry` for the session, the credentials of `~/.docker/config.json` (auths, credential
  helpers) and the bearer-token dance of registries with a token service (`do_request` without
  its retry wrapper: retries here know which errors are worth retrying and resume uploads).
  Chunked uploads resume at the offset the registry reports for the session (`Range` of
  `GET <session>`), downloads with `Range: bytes=N-`; both stream through files.
Registries that answer with `WWW-Authenticate: Basic` (htpasswd) get the credentials on every
request, as docker does; registries on loopback are spoken to over plain HTTP (as docker does),
others over TLS unless `insecure`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import oras.provider
import requests
from requests.adapters import HTTPAdapter

from sqlrs.domain.remote import (
    MANIFEST_MEDIA_TYPE,
    CorruptBlob,
    RegistryError,
    RegistryUnauthorized,
    RemoteNotFound,
    RemoteRef,
)
from sqlrs.ports.registry import Progress

log = logging.getLogger("sqlrs.registry")

CHUNK = 8 * 1024 * 1024  # one PATCH of a chunked upload; what is in memory at a time
READ = 1024 * 1024
ATTEMPTS = 5
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 300.0
ACCEPT = f"{MANIFEST_MEDIA_TYPE}, application/vnd.oci.image.index.v1+json"
ENV_USER = "SQLRS_REGISTRY_USERNAME"
ENV_PASSWORD = "SQLRS_REGISTRY_PASSWORD"


class _Retryable(Exception):
    """A transient failure (connection, 5xx, 429): the transfer is tried again."""


class _TimeoutAdapter(HTTPAdapter):
    """oras-py passes no timeouts: a registry that stops answering would hang a job forever."""

    def send(self, request: Any, stream: bool = False, timeout: Any = None, verify: Any = True, cert: Any = None,
             proxies: Any = None) -> Any:
        return super().send(request, stream=stream, timeout=timeout or (CONNECT_TIMEOUT, READ_TIMEOUT),
                            verify=verify, cert=cert, proxies=proxies)


class _BasicAuth(requests.auth.AuthBase):
    def __init__(self, encoded: str):
        self.encoded = encoded

    def __call__(self, request: Any) -> Any:
        request.headers["Authorization"] = f"Basic {self.encoded}"
        return request


def docker_config_paths() -> list[str]:
    """Where docker keeps credentials: $DOCKER_CONFIG/config.json, else ~/.docker/config.json."""
    directory = os.environ.get("DOCKER_CONFIG")
    path = Path(directory) / "config.json" if directory else Path.home() / ".docker" / "config.json"
    return [str(path)] if path.is_file() else []


class OrasRegistry:
    """One repository of one registry (implements `sqlrs.ports.registry.StateRegistry`)."""

    def __init__(self, ref: RemoteRef, insecure: bool = False, sleep: Callable[[float], None] = time.sleep):
        self.ref = ref
        plain_http = ref.loopback or insecure
        self.prefix = "http" if plain_http else "https"
        self._sleep = sleep
        self._oras = oras.provider.Registry(hostname=ref.host, insecure=plain_http, tls_verify=True)
        self._oras.session.mount("http://", _TimeoutAdapter())
        self._oras.session.mount("https://", _TimeoutAdapter())
        self._container = self._oras.get_container(f"{ref.repository}:{ref.tag or 'latest'}")
        self._base = f"{self.prefix}://{ref.host}/v2/{ref.repository}"
        self._connected = False

    # -- connection and credentials ----------------------------------------------------------------
    def _credentials(self) -> tuple[str, str] | None:
        """(base64 user:password, where it came from): environment first, then docker's config."""
        user, password = os.environ.get(ENV_USER), os.environ.get(ENV_PASSWORD)
        if user and password is not None:
            return base64.b64encode(f"{user}:{password}".encode()).decode(), ENV_USER
        auth = self._oras.auth
        auth.load_configs(self._container, configs=docker_config_paths())
        encoded = getattr(auth, "_basic_auth", None)
        return (encoded, "docker config.json") if encoded else None

    def connect(self) -> None:
        """Ping `/v2/` and settle how to authenticate; clear errors for the usual mistakes."""
        if self._connected:
            return
        url = f"{self.prefix}://{self.ref.host}/v2/"
        try:
            response = self._oras.session.get(url, timeout=(CONNECT_TIMEOUT, 30))
        except requests.exceptions.SSLError as exc:
            raise RegistryError(f"TLS with registry {self.ref.host} failed: {exc}",
                                hint="a registry without TLS needs: sqlrs config set cache.remote_insecure true") \
                from None
        except requests.RequestException as exc:
            raise RegistryError(f"cannot reach registry {self.ref.host}: {type(exc).__name__}",
                                hint=f"is it running and is {self.prefix}://{self.ref.host}/v2/ right?") from None
        if response.status_code == 401:
            challenge = response.headers.get("WWW-Authenticate", "")
            credentials = self._credentials()
            if credentials is None:
                raise RegistryUnauthorized(
                    f"registry {self.ref.host} needs credentials",
                    hint=f"set {ENV_USER} and {ENV_PASSWORD} for the engine, or `docker login {self.ref.host}`")
            encoded, source = credentials
            if challenge.lower().startswith("basic"):
                self._oras.session.auth = _BasicAuth(encoded)
                check = self._oras.session.get(url)
                if check.status_code == 401:
                    user = base64.b64decode(encoded).decode(errors="replace").split(":", 1)[0]
                    raise RegistryUnauthorized(f"registry {self.ref.host} refused the credentials of user {user!r} "
                                               f"(from {source})", hint="check the user name and password")
            else:
                self._oras.auth._basic_auth = encoded  # the token service gets them
        elif response.status_code >= 400 and response.status_code != 404:
            raise RegistryError(f"registry {self.ref.host} answered {response.status_code} on /v2/",
                                hint="is this an OCI distribution registry?")
        self._connected = True

    def _request(self, url: str, method: str = "GET", data: Any = None, headers: dict[str, str] | None = None,
                 stream: bool = False) -> requests.Response:
        self.connect()
        try:
            # oras' auth handling (bearer tokens) without its blind retry: see the module doc
            response: requests.Response = oras.provider.Registry.do_request.__wrapped__(
                self._oras, url, method, data=data, headers=dict(headers or {}), stream=stream)
        except requests.RequestException as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None
        except ValueError as exc:  # oras: "Cannot respond to request for authentication."
            raise RegistryUnauthorized(f"registry {self.ref.host} refused access to {self.ref.repository}: {exc}",
                                       hint="check the credentials and the repository's permissions") from None
        if response.status_code in (401, 403):
            raise RegistryUnauthorized(f"registry {self.ref.host} refused {method} on {self.ref.repository} "
                                       f"({response.status_code})",
                                       hint="check the credentials and the repository's permissions")
        if response.status_code >= 500 or response.status_code == 429:
            raise _Retryable(f"{method} {url}: {response.status_code} {response.reason}")
        return response

    def _retrying(self, what: str, attempt: Callable[[], Any]) -> Any:
        delay = 0.5
        for number in range(1, ATTEMPTS + 1):
            try:
                return attempt()
            except _Retryable as exc:
                if number == ATTEMPTS:
                    raise RegistryError(f"{what} failed after {ATTEMPTS} attempts: {exc}",
                                        hint=f"is registry {self.ref.host} up?") from None
                log.warning("%s: %s; again in %.1fs (attempt %d of %d)", what, exc, delay, number + 1, ATTEMPTS)
                self._sleep(delay)
                delay = min(delay * 3, 20.0)
        raise AssertionError("unreachable")

    @staticmethod
    def _fail(response: requests.Response, what: str) -> RegistryError:
        try:
            errors = response.json().get("errors") or []
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict))
        except ValueError:
            detail = response.text[:200]
        return RegistryError(f"{what}: registry answered {response.status_code} {response.reason}"
                             + (f" ({detail})" if detail else ""))

    def _location(self, response: requests.Response) -> str:
        location = response.headers.get("Location", "")
        if not location:
            raise RegistryError("the registry gave no upload location")
        if not location.startswith("http"):
            location = f"{self.prefix}://{self.ref.host}{location}"
        return location

    @staticmethod
    def _with_digest(url: str, digest: str) -> str:
        return f"{url}{'&' if '?' in url else '?'}digest={digest}"

    # -- manifests -----------------------------------------------------------------------------------
    def manifest(self, reference: str) -> tuple[dict[str, Any], str] | None:
        def attempt() -> tuple[dict[str, Any], str] | None:
            response = self._request(f"{self._base}/manifests/{reference}", headers={"Accept": ACCEPT})
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise self._fail(response, f"reading manifest {reference}")
            body = response.content
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            if reference.startswith("sha256:") and digest != reference:
                raise CorruptBlob(f"manifest {reference} arrived with digest {digest}")
            try:
                return json.loads(body), digest
            except ValueError:
                raise RegistryError(f"manifest {reference} is not JSON") from None

        result: tuple[dict[str, Any], str] | None = self._retrying(f"reading manifest {reference}", attempt)
        return result

    def has_manifest(self, reference: str) -> bool:
        def attempt() -> bool:
            response = self._request(f"{self._base}/manifests/{reference}", "HEAD", headers={"Accept": ACCEPT})
            return response.status_code == 200

        return bool(self._retrying(f"looking up {reference}", attempt))

    def put_manifest(self, reference: str, manifest: dict[str, Any]) -> str:
        body = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()

        def attempt() -> str:
            response = self._request(f"{self._base}/manifests/{reference}", "PUT", data=body,
                                     headers={"Content-Type": MANIFEST_MEDIA_TYPE})
            if response.status_code not in (200, 201):
                raise self._fail(response, f"storing manifest {reference}")
            return "sha256:" + hashlib.sha256(body).hexdigest()

        return str(self._retrying(f"storing manifest {reference}", attempt))

    # -- blobs ---------------------------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        return bool(self._retrying(f"looking up blob {digest[:19]}",
                                   lambda: self._request(f"{self._base}/blobs/{digest}", "HEAD").status_code == 200))

    def _start_upload(self) -> str:
        response = self._request(f"{self._base}/blobs/uploads/", "POST", headers={"Content-Length": "0"})
        if response.status_code != 202:
            raise self._fail(response, "starting an upload")
        return self._location(response)

    def _uploaded_offset(self, session: str) -> int | None:
        """How many bytes the registry holds of an upload session; None when it forgot it."""
        response = self._request(session, "GET")
        if response.status_code == 404:
            return None
        if response.status_code != 204:
            raise self._fail(response, "resuming an upload")
        held = response.headers.get("Range", "")  # "0-N" (inclusive), or absent/"0-0" for none
        return int(held.split("-", 1)[1]) + 1 if "-" in held and held != "0-0" else 0

    def push_bytes(self, data: bytes, media_type: str) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        descriptor = {"mediaType": media_type, "digest": digest, "size": len(data)}
        if self.has_blob(digest):
            return descriptor

        def attempt() -> None:
            session = self._start_upload()
            response = self._request(self._with_digest(session, digest), "PUT", data=data,
                                     headers={"Content-Type": "application/octet-stream",
                                              "Content-Length": str(len(data))})
            if response.status_code != 201:
                raise self._fail(response, f"uploading blob {digest[:19]}")

        self._retrying(f"uploading blob {digest[:19]}", attempt)
        return descriptor

    def push_blob(self, path: Path, digest: str, size: int, progress: Progress) -> bool:
        if self.has_blob(digest):
            return False
        state: dict[str, Any] = {"session": None, "offset": 0}

        def attempt() -> None:
            if state["session"] is not None:  # resume where the registry says it is
                held = self._uploaded_offset(state["session"])
                if held is None:
                    state["session"], state["offset"] = None, 0
                else:
                    state["offset"] = held
            if state["session"] is None:
                state["session"], state["offset"] = self._start_upload(), 0
            with open(path, "rb") as handle:
                handle.seek(state["offset"])
                while state["offset"] < size:
                    chunk = handle.read(CHUNK)
                    if not chunk:
                        raise CorruptBlob(f"{path} shrank while uploading it")
                    start = state["offset"]
                    response = self._request(state["session"], "PATCH", data=chunk, headers={
                        "Content-Type": "application/octet-stream", "Content-Length": str(len(chunk)),
                        "Content-Range": f"{start}-{start + len(chunk) - 1}"})
                    if response.status_code == 416:
                        raise _Retryable("the registry holds another offset of this upload")
                    if response.status_code != 202:
                        raise self._fail(response, f"uploading blob {digest[:19]}")
                    state["session"] = self._location(response)
                    state["offset"] = start + len(chunk)
                    progress(state["offset"], size)
            response = self._request(self._with_digest(state["session"], digest), "PUT",
                                     headers={"Content-Length": "0"})
            if response.status_code == 400:
                raise CorruptBlob(f"the registry refused blob {digest[:19]}: its content does not match the digest")
            if response.status_code != 201:
                raise self._fail(response, f"finishing the upload of blob {digest[:19]}")

        self._retrying(f"uploading blob {digest[:19]}", attempt)
        return True

    def fetch_blob(self, digest: str, size: int, target: Path, progress: Progress) -> None:
        hasher = hashlib.sha256()
        done = 0
        short: list[int] = []
        try:
            with open(target, "xb") as out:
                def attempt() -> None:
                    nonlocal hasher, done
                    headers = {"Range": f"bytes={done}-"} if done else {}
                    response = self._request(f"{self._base}/blobs/{digest}", "GET", headers=headers, stream=True)
                    with response:
                        if response.status_code == 404:
                            raise RemoteNotFound(f"blob {digest} is not in {self.ref.host}/{self.ref.repository}")
                        if response.status_code == 416:
                            return  # nothing past `done`: the blob is shorter than its descriptor says
                        if response.status_code == 200 and done:  # no ranges here: start over
                            out.seek(0)
                            out.truncate()
                            hasher, done = hashlib.sha256(), 0
                        elif response.status_code not in (200, 206):
                            raise self._fail(response, f"downloading blob {digest[:19]}")
                        try:
                            for chunk in response.iter_content(READ):
                                if done + len(chunk) > size:
                                    raise CorruptBlob(f"blob {digest[:19]} is longer than its {size} bytes")
                                out.write(chunk)
                                hasher.update(chunk)
                                done += len(chunk)
                                progress(done, size)
                        except requests.RequestException as exc:
                            raise _Retryable(f"download broke at byte {done}: {type(exc).__name__}") from None
                    if done < size:
                        short.append(done)
                        if len(short) < 2 or short[-1] != short[-2]:
                            raise _Retryable(f"download ended at byte {done} of {size}")

                self._retrying(f"downloading blob {digest[:19]}", attempt)
                out.flush()
                os.fsync(out.fileno())
            if done != size:
                raise CorruptBlob(f"blob {digest[:19]} is truncated: {done} of {size} bytes",
                                  hint="the registry's copy is damaged: push the state again")
            actual = "sha256:" + hasher.hexdigest()
            if actual != digest:
                raise CorruptBlob(f"blob {digest[:19]} is corrupt: its content hashes to {actual[:19]}",
                                  hint="the registry's copy is damaged: push the state again")
        except BaseException:
            target.unlink(missing_ok=True)
            raise


def open_registry(insecure: Callable[[], bool]) -> Callable[[RemoteRef], OrasRegistry]:
    """The engine's `RegistryOpener`: `insecure()` reads cache.remote_insecure when a ref opens."""
    return lambda ref: OrasRegistry(ref, insecure=insecure())
