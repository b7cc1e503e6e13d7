"""replpool's Python worker: the whole Python side of the service.

The server starts this script with the protocol on fds 0 (requests) and 1 (replies). Before
anything else runs, the protocol moves to private descriptors and fds 0, 1 and 2 are pointed
elsewhere: fd 0 at /dev/null (or a request's stdin), fds 1 and 2 at capture pipes that a reader
thread drains. So `print`, `os.write(1, ...)`, C extensions and child processes all land in the
reply, and nothing user code writes can corrupt the framing.

Frames are a 4-byte big-endian length followed by that many bytes of UTF-8 JSON. Every request
gets zero or more `stream`/`display` frames and then exactly one `done` frame.

Standard library only: this file must run under whatever interpreter the operator configures.
"""

import ast
import base64
import codecs
import errno
import gc
import importlib
import io
import itertools
import json
import linecache
import os
import re
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
import types

# =================================================================================================
# Protocol
# Length-prefixed JSON frames over the worker's private copies of its pipes.
# =================================================================================================


WORKER_FILE = os.path.abspath(__file__)
HEADER = struct.Struct(">I")
READ_CHUNK = 1 << 20
# Streamed output is sent at most this long after it was written.
STREAM_FLUSH_SECONDS = 0.02
STREAM_FLUSH_BYTES = 64 * 1024
# How often a template that keeps its workers (see Template) kills what cells detached.
TEMPLATE_SWEEP_INTERVAL = 0.5


class ProtocolError(Exception):
    """The peer broke the framing; the worker cannot go on."""


class Protocol:
    """Length-prefixed JSON frames on two private descriptors.

    Writes take a lock because the capture thread sends `stream` frames while the main thread
    runs user code; a frame is always written whole.
    """

    def __init__(self, rfd, wfd, max_frame):
        self.rfd = rfd
        self.wfd = wfd
        self.max_frame = max_frame
        self.lock = threading.Lock()

    def _read_exact(self, n):
        chunks = []
        while n:
            chunk = os.read(self.rfd, n)
            if not chunk:
                return None
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def read(self):
        """The next request, or None when the server closed the pipe."""
        header = self._read_exact(HEADER.size)
        if header is None:
            return None
        (length,) = HEADER.unpack(header)
        if length > self.max_frame:
            raise ProtocolError(f"request frame of {length} bytes exceeds {self.max_frame}")
        body = self._read_exact(length)
        if body is None:
            return None
        return json.loads(body)

    def encode(self, message):
        # JSON made already (a table's, a chart's) goes in as it is, not decoded and encoded
        # again: it is written as a marker, then the marker's text is replaced by it.
        texts = []

        def as_marker(value):
            if isinstance(value, JsonText):
                texts.append(value.text)
                return f"\0{JSON_TEXT_NONCE}:{len(texts) - 1}\0"
            raise TypeError(f"{type(value).__name__} is not JSON")

        # A lone surrogate (from a repr, say) is not UTF-8; replace it rather than fail the frame.
        data = json.dumps(message, ensure_ascii=False, separators=(",", ":"), default=as_marker)
        if texts:
            # One pass over the frame, however many tables it holds. A marker user code wrote
            # itself (it can read the nonce) is put back as the string it was.
            def fill(match):
                i = int(match.group(1))
                return texts[i] if i < len(texts) else match.group(0)

            data = JSON_TEXT_MARKER.sub(fill, data)
        return data.encode("utf-8", "replace")

    def send(self, message):
        self.send_encoded(self.encode(message))

    def send_encoded(self, data):
        if len(data) > self.max_frame:
            raise ProtocolError(f"reply frame of {len(data)} bytes exceeds {self.max_frame}")
        view = memoryview(HEADER.pack(len(data)) + data)
        with self.lock:
            while view:
                written = os.write(self.wfd, view)
                view = view[written:]


# =================================================================================================
# Capture
# Where a cell's output goes: fds 1 and 2 are pipes drained by one thread into the current
# execution's sink; sys.stdout/sys.stderr and fds 0-2 are put back at each cell.
# =================================================================================================


class Sink:
    """Collects one execution's output, cut at the byte cap, optionally streaming it."""

    def __init__(self, cap, stream_to=None):
        self.remaining = cap
        self.truncated = False
        # Made at a stream's first output: most cells write to one stream or none.
        self.decoders = {}
        self.parts = {"stdout": [], "stderr": []}
        self.pending_bytes = 0
        self.pending_since = None
        self.stream_to = stream_to

    def feed(self, name, data):
        if self.remaining <= 0:
            self.truncated = True
            return
        if len(data) > self.remaining:
            data = data[: self.remaining]
            self.truncated = True
        self.remaining -= len(data)
        decoder = self.decoders.get(name)
        if decoder is None:
            decoder = self.decoders[name] = codecs.getincrementaldecoder("utf-8")("replace")
        text = decoder.decode(data)
        if text:
            self.parts[name].append(text)
            self.pending_bytes += len(data)
            if self.pending_since is None:
                self.pending_since = time.monotonic()

    def flush_due_in(self):
        """Seconds until pending streamed output must go out (None: nothing pending)."""
        if self.stream_to is None or self.pending_since is None:
            return None
        if self.pending_bytes >= STREAM_FLUSH_BYTES:
            return 0.0
        return max(0.0, self.pending_since + STREAM_FLUSH_SECONDS - time.monotonic())

    def flush(self):
        """Sends what is pending as `stream` frames (streaming mode only)."""
        if self.stream_to is None:
            return
        for name in ("stdout", "stderr"):
            if self.parts[name]:
                self.stream_to(name, "".join(self.parts[name]))
                self.parts[name].clear()
        self.pending_bytes = 0
        self.pending_since = None

    def finish(self):
        """Ends the sink; returns (stdout, stderr) not yet streamed."""
        for name, decoder in self.decoders.items():
            tail = decoder.decode(b"", final=True)
            if tail:
                self.parts[name].append(tail)
        self.flush()
        return "".join(self.parts["stdout"]), "".join(self.parts["stderr"])


class Capture:
    """Owns fds 1 and 2: both are pipes, drained by a thread into the current execution's sink.

    The pipes stay in place for the worker's life, so switching executions costs no syscalls
    beyond draining. The thread keeps reading past the cap (discarding) so a writer never blocks
    on a full pipe. Reads happen under a lock so the main thread can drain what is left at the
    end of a cell without losing order.
    """

    def __init__(self, stdio):
        self.lock = threading.Lock()
        self.sink = None
        self.stdio = stdio
        self.fds = {}
        # The write ends, kept (close-on-exec) to put fds 1 and 2 back if a cell closes or
        # replaces them.
        self.writers = {}
        for name, target in (("stdout", 1), ("stderr", 2)):
            r, w = os.pipe()
            try:
                import fcntl

                fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, READ_CHUNK)
            except (ImportError, AttributeError, OSError):
                pass
            os.dup2(w, target)
            self.writers[target] = w
            os.set_blocking(r, False)
            self.fds[r] = name
        # Which pipes hold output, in one syscall: at the start and end of a cell, usually
        # neither does.
        self.pending = select.poll()
        for fd in self.fds:
            self.pending.register(fd, select.POLLIN)
        thread = threading.Thread(target=self._run, name="replpool-capture", daemon=True)
        thread.start()

    def _read_available(self, fd):
        name = self.fds[fd]
        while True:
            try:
                data = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                return
            if not data:
                return
            if self.sink is not None:
                self.sink.feed(name, data)

    def _run(self):
        poller = select.poll()
        for fd in self.fds:
            poller.register(fd, select.POLLIN)
        while True:
            sink = self.sink
            due = sink.flush_due_in() if sink is not None else None
            events = poller.poll(None if due is None else due * 1000)
            with self.lock:
                for fd, _ in events:
                    self._read_available(fd)
                sink = self.sink
                if sink is not None and sink.flush_due_in() == 0.0:
                    sink.flush()

    def restore_fds(self):
        """Points fds 1 and 2 at the capture pipes again, whatever the last cell did to them
        (closed, or pointed elsewhere). A dup2 each: cheaper than finding out."""
        for target, w in self.writers.items():
            os.dup2(w, target)

    def start(self, sink):
        with self.lock:
            for fd, _ in self.pending.poll(0):
                self._read_available(fd)  # stray output from between cells is dropped
            self.sink = sink

    def _drain(self):
        """Pushes what the cell buffered into the pipes and reads it all. Call with the lock."""
        self.stdio.flush()
        flush_c_stdio()
        for fd, _ in self.pending.poll(0):
            self._read_available(fd)

    def flush_pending(self):
        """Sends what the cell wrote so far (streaming), e.g. before a display frame."""
        with self.lock:
            self._drain()
            if self.sink is not None:
                self.sink.flush()

    def stop(self):
        """Drains what user code wrote and detaches the sink; returns (stdout, stderr, truncated)."""
        with self.lock:
            self._drain()
            sink, self.sink = self.sink, None
            stdout, stderr = sink.finish()
        return stdout, stderr, sink.truncated


def _libc_fflush():
    try:
        import ctypes

        return ctypes.CDLL(None).fflush
    except Exception:
        return None


_FFLUSH = None


def flush_c_stdio():
    """C code that printf()s to a pipe is block-buffered; flush it so the cell's output is whole."""
    if _FFLUSH is not None:
        _FFLUSH(None)


def text_stream(fd, mode):
    return open(fd, mode, encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False)


class Stdio:
    """The Python-level streams over fds 0-2.

    Opening them costs more than a trivial cell, so they are made once and only put back when
    a cell replaced or closed them.
    """

    def __init__(self):
        self.stdout = text_stream(1, "w")
        self.stderr = text_stream(2, "w")
        self.stdin = text_stream(0, "r")

    def renew_stdin(self):
        """fd 0 changed under sys.stdin: its read-ahead buffer belongs to the old file."""
        self.stdin = text_stream(0, "r")

    def flush(self):
        """Flushes sys.stdout and sys.stderr at the end of a cell. One of ours that cannot be
        flushed (the cell closed its fd) is closed: what its buffer holds would otherwise come
        out at the start of the next cell's output."""
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            try:
                stream.flush()
            except Exception:
                if stream is getattr(self, name):
                    try:
                        stream.close()  # drops the buffer even when its flush fails
                    except Exception:
                        pass

    def install(self):
        for name in ("stdout", "stderr", "stdin"):
            ours = getattr(self, name)
            if ours.closed:
                ours = text_stream({"stdin": 0, "stdout": 1, "stderr": 2}[name], "r" if name == "stdin" else "w")
                setattr(self, name, ours)
            if getattr(sys, name) is not ours:
                setattr(sys, name, ours)
            if getattr(sys, f"__{name}__") is not ours:
                setattr(sys, f"__{name}__", ours)


# =================================================================================================
# Cells: user code, its limits, its value
# When user code runs (signals raise only then), the CPU-time limit, and rich display
# (mime bundles, figures).
# =================================================================================================


class CPUTimeLimitExceeded(BaseException):
    """The cell used more CPU time than its limit (a BaseException, like KeyboardInterrupt, so
    that `except Exception` in user code does not swallow it)."""


class OutputLimitExceeded(Exception):
    """A displayed output too large to be sent at all (over the protocol's frame limit,
    `execution.max_frame_bytes`)."""


# errnos of a write a limit on files refused: the session's quota (its own filesystem is
# full, or a disk quota), or the file size limit (RLIMIT_FSIZE).
FILE_LIMIT_ERRNOS = frozenset(
    e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EFBIG) if e is not None
)


def surely_fits(bundle, max_frame):
    """Whether a MIME bundle's frame is sure to be under `max_frame` bytes without encoding
    it: a character takes at most 6 bytes in the frame's JSON (`\\u001f`)."""
    size = 1024
    for mime, value in bundle.items():
        if isinstance(value, str):
            size += 6 * (len(mime) + len(value))
        elif isinstance(value, JsonText):
            size += 6 * len(mime) + len(value.text)
        else:
            return False
    return size <= max_frame


def error_category(exc):
    """What kind of failure an exception from a cell is (the server's `Category`). An
    interrupt is `runtime` here: only the server knows whether it sent it (deadline or client)."""
    if getattr(exc, "_replpool_compiling", False):
        return "syntax"
    if isinstance(exc, MemoryError):
        return "memory"
    if isinstance(exc, CPUTimeLimitExceeded):
        return "cpu_limit"
    if isinstance(exc, OutputLimitExceeded):
        return "output_limit"
    if isinstance(exc, OSError) and exc.errno in FILE_LIMIT_ERRNOS:
        return "disk_quota"
    return "runtime"


class FormattingInterrupted(BaseException):
    """An interrupt landed while the worker formatted an error: the reply goes out with what
    was made so far (a BaseException, so that `except Exception` in a user's `__str__` does
    not swallow it)."""


class UserCode:
    """Marks when user code runs: SIGINT and SIGXCPU raise only then.

    A signal that lands while the worker writes a frame would otherwise cut the frame in half.
    While the worker formats an error (which runs user code too: `__str__`, and can take long)
    they raise FormattingInterrupted, which the formatter catches, so the reply still goes out.
    """

    active = False
    formatting = False
    cpu_limit = None

    @classmethod
    def on_sigint(cls, signum, frame):
        if cls.active:
            raise KeyboardInterrupt
        if cls.formatting:
            raise FormattingInterrupted

    @classmethod
    def on_sigxcpu(cls, signum, frame):
        if cls.active:
            raise CPUTimeLimitExceeded(f"CPU time limit of {cls.cpu_limit} s exceeded")
        if cls.formatting:
            raise FormattingInterrupted


class CpuLimit:
    """A per-cell CPU-time limit, as the soft RLIMIT_CPU set to the time used so far plus the
    limit; the kernel's SIGXCPU becomes CPUTimeLimitExceeded. Between cells there is no limit."""

    def __init__(self):
        import resource

        self.resource = resource
        self.hard = resource.getrlimit(resource.RLIMIT_CPU)[1]

    def used(self):
        usage = self.resource.getrusage(self.resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def used_with_children(self):
        """CPU time of this process (every thread) and of the children it waited for."""
        own = self.resource.getrusage(self.resource.RUSAGE_SELF)
        children = self.resource.getrusage(self.resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    def arm(self, seconds):
        if not seconds:
            return
        UserCode.cpu_limit = seconds
        soft = int(self.used()) + int(seconds) + 1
        if self.hard != self.resource.RLIM_INFINITY:
            soft = min(soft, self.hard)
        self.resource.setrlimit(self.resource.RLIMIT_CPU, (soft, self.hard))

    def disarm(self, seconds):
        if seconds:
            self.resource.setrlimit(self.resource.RLIMIT_CPU, (self.hard, self.hard))


# Values of these exact types have no rich forms: looking for `_repr_*_` methods is skipped.
PLAIN_TYPES = frozenset((int, float, complex, bool, str, bytes, list, tuple, dict, set, frozenset))


def mime_bundle(obj):
    """A Jupyter-style MIME bundle for a value: text/plain always, richer forms when offered."""
    text = repr(obj)
    bundle = {"text/plain": text}
    if isinstance(obj, type) or type(obj) in PLAIN_TYPES:
        return bundle
    figure_module = sys.modules.get("matplotlib.figure")
    if figure_module is not None and isinstance(obj, figure_module.Figure):
        return figure_bundle(obj, text)
    for method, mime in (
        ("_repr_html_", "text/html"),
        ("_repr_markdown_", "text/markdown"),
        ("_repr_svg_", "image/svg+xml"),
        ("_repr_latex_", "text/latex"),
        ("_repr_png_", "image/png"),
        ("_repr_jpeg_", "image/jpeg"),
        ("_repr_json_", "application/json"),
    ):
        render = getattr(obj, method, None)
        if not callable(render):
            continue
        try:
            data = render()
        except Exception:
            continue
        if isinstance(data, tuple):  # (data, metadata)
            data = data[0]
        if data is None:
            continue
        if isinstance(data, bytes):
            data = base64.b64encode(data).decode("ascii")
        bundle[mime] = data
    if RichData.enabled:
        table = table_resource(obj)
        if table is not None:
            bundle[TABLE_MIME] = table
    return bundle


def figure_bundle(figure, text):
    """A figure's bundle: its PNG and, with data on, its chart (read before the PNG closes it)."""
    chart = figure_chart(figure) if RichData.enabled else None
    bundle = {"text/plain": text, "image/png": figure_png(figure)}
    if chart is not None:
        bundle[CHART_MIME] = chart
    return bundle


def without_data(bundle):
    """The bundle without its data keys (the pictures and text stay)."""
    return {mime: value for mime, value in bundle.items() if mime not in DATA_MIMES}


# zlib level of figures' PNGs. Level 1 encodes a typical plot in half the time of the default
# (6) for a file about a third larger; the pixels are the same.
PNG_COMPRESS_LEVEL = 1


def figure_png(obj):
    """Base64 PNG of a matplotlib Figure, closing it; None for anything else.

    What Jupyter's inline backend shows: `savefig(format="png", bbox_inches="tight")` at the
    figure's dpi."""
    figure_module = sys.modules.get("matplotlib.figure")
    if figure_module is None or not isinstance(obj, figure_module.Figure):
        return None
    try:
        png = tight_png_in_one_draw(obj)
    except Exception:
        png = None  # savefig says what is wrong, if anything is
    if png is None:
        buf = io.BytesIO()
        obj.savefig(buf, format="png", bbox_inches="tight", pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
        png = buf.getvalue()
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(obj)
    return base64.b64encode(png).decode("ascii")


def tight_png_in_one_draw(figure):
    """The figure's PNG cropped to its tight bounding box, from one draw; None where only
    `savefig` can make it.

    `savefig(bbox_inches="tight")` draws the figure twice: once (without rendering) to lay it
    out and measure it, then again, rendered, on a canvas the size of the padded tight box.
    Most of a draw is laying out ticks and text, not rendering, so this draws once, rendered,
    at the figure's size, measures the tight box from that draw, and crops the pixels to the
    padded box (the padding beyond the figure's edges is its background, as in savefig's
    image). The result is the size of savefig's image, its content shifted by under half a
    pixel. Only when the tight box itself lies within the figure: what lies beyond it (a
    legend placed outside the axes) was never rendered, and savefig's larger canvas is needed.
    """
    import matplotlib
    from matplotlib import colors, image
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = figure.canvas
    rc = matplotlib.rcParams
    background = colors.to_rgba(figure.get_facecolor())
    # savefig's own settings would change what is drawn, and padding is only known to be a
    # plain opaque background: leave the other figures to savefig.
    if (
        type(canvas) is not FigureCanvasAgg
        or rc["savefig.dpi"] not in ("figure", figure.dpi)
        or rc["savefig.transparent"]
        or rc["savefig.facecolor"] != "auto"
        or rc["savefig.edgecolor"] != "auto"
        or not isinstance(rc["savefig.pad_inches"], (int, float))
        or not figure.patch.get_visible()
        or figure.patch.get_linewidth() > 0
        or background[3] != 1.0
    ):
        return None
    # As savefig does: animated artists are drawn too while saving.
    saving = canvas._is_saving
    canvas._is_saving = True
    try:
        canvas.draw()
        renderer = canvas.get_renderer()
        tight = figure.get_tightbbox(renderer)
    finally:
        canvas._is_saving = saving
    dpi = figure.dpi
    if tight.x0 < 0 or tight.y0 < 0 or tight.x1 * dpi > renderer.width or tight.y1 * dpi > renderer.height:
        return None
    box = tight.padded(rc["savefig.pad_inches"])
    # savefig's canvas: the padded box's size in whole pixels (rounded as the canvas does:
    # down, unless within 1e-8 of the next), its lower left corner at (x0, y0) of the
    # figure's. Rows count from the top.
    width, height = int(box.width * dpi + 1e-8), int(box.height * dpi + 1e-8)
    left, bottom = round(box.x0 * dpi), round(box.y0 * dpi)
    top = renderer.height - bottom - height
    if width < 1 or height < 1:
        return None
    import numpy

    drawn = numpy.asarray(renderer.buffer_rgba())
    pixels = numpy.empty((height, width, 4), numpy.uint8)
    pixels[:] = numpy.round(numpy.array(background) * 255)
    # The part of the padded box on the figure's canvas, in both images' pixels.
    src_top, src_left = max(top, 0), max(left, 0)
    src_bottom, src_right = min(top + height, renderer.height), min(left + width, renderer.width)
    if src_top < src_bottom and src_left < src_right:
        pixels[src_top - top : src_bottom - top, src_left - left : src_right - left] = drawn[
            src_top:src_bottom, src_left:src_right
        ]
    buf = io.BytesIO()
    image.imsave(buf, pixels, format="png", origin="upper", dpi=dpi, pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
    return buf.getvalue()


def open_figures():
    """Every figure left open by the cell, as display bundles; the figures are closed."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return []
    bundles = []
    for number in pyplot.get_fignums():
        figure = pyplot.figure(number)
        bundles.append(figure_bundle(figure, repr(figure)))
    return bundles


class Display:
    """Where `display()` and `plt.show()` send MIME bundles while a cell runs: as `display`
    frames at once when the cell streams (after the output written before them, to keep the
    order), else into the cell's reply. Outside a cell, nowhere."""

    emit = None

    @classmethod
    def show(cls, bundle):
        if cls.emit is not None:
            cls.emit(bundle)


def display(*objs, **_ignored):
    """IPython's `display` for the common cases: each object as a MIME bundle (a matplotlib
    figure as PNG, and then closed), in order."""
    for obj in objs:
        Display.show(mime_bundle(obj))


def show_figures(*_args, **_kwargs):
    """`plt.show()`: every open figure is displayed now, and closed (as IPython's inline
    backend does)."""
    for bundle in open_figures():
        Display.show(bundle)


def hook_pyplot():
    """Points `plt.show` at `show_figures` once pyplot is imported (by the preload or a cell), and
    has box plots keep their statistics (`record_boxes`)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None and pyplot.show is not show_figures:
        pyplot.show = show_figures
    record_boxes()


# =================================================================================================
# Data beside pictures
# A DataFrame's or Series' rows as the Table Schema resource pandas itself makes
# (`application/vnd.dataresource+json`), and a figure's chart as data
# (`application/vnd.replpool.chart+json`): JSON values added to the bundle, never strings.
# =================================================================================================


TABLE_MIME = "application/vnd.dataresource+json"
CHART_MIME = "application/vnd.replpool.chart+json"
DATA_MIMES = (TABLE_MIME, CHART_MIME)


class RichData:
    """Whether the running cell's bundles carry data, and its bounds (from the exec request):
    `max_rows` rows of a table, points of a series, bars, wedges or boxes of a chart;
    `max_bytes` of a table's JSON (a share of the frame, so a wide table is cut further
    rather than make the reply too large). Off outside a cell."""

    enabled = False
    max_rows = 1000
    max_bytes = 16 << 20


class JsonText:
    """A JSON value encoded where it was made (ASCII only), put into frames as it is: a table
    is not decoded from pandas' text to be encoded again, and `surely_fits` knows its size."""

    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text


# What marks a JsonText's place in a frame while it is encoded (see Protocol.encode): random,
# so that no string a cell makes is taken for one.
JSON_TEXT_NONCE = os.urandom(8).hex()
# A marker as json.dumps writes it: the quoted string, its NULs escaped.
JSON_TEXT_MARKER = re.compile(f'"\\\\u0000{JSON_TEXT_NONCE}:([0-9]+)\\\\u0000"')


def table_resource(obj):
    """The Table Schema data resource of a DataFrame or Series, as pandas' own
    `to_json(orient="table")` makes it, cut to `RichData.max_rows` rows (and further while
    its JSON is over `RichData.max_bytes`); None for anything else, or what pandas cannot
    make a table of (MultiIndex columns, index names clashing with columns).

    Beside pandas' `schema` and `data`: `truncated` (rows were cut) and `total_rows`."""
    pandas = sys.modules.get("pandas")
    # The object's real type: `isinstance` believes a `__class__` property (a mock with
    # spec=DataFrame says it is one), and what such an object returns is not pandas' JSON.
    if pandas is None or not issubclass(type(obj), (pandas.DataFrame, pandas.Series)):
        return None
    import warnings

    # A subclass may override any of this: whatever it raises or returns, the cell's value is
    # shown as it would be without data, and nothing but pandas-shaped JSON goes into the frame.
    try:
        total = len(obj)
        if not isinstance(total, int) or total < 0:
            return None
        rows = min(total, RichData.max_rows)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            text, rows = table_json(obj, rows, total)
    except Exception:
        return None
    if (
        type(text) is not str
        or not text.startswith("{")
        or not text.endswith("}")
        or not text.isascii()
    ):
        return None
    # pandas' object, with our two keys after its own (pandas escapes non-ASCII: the text is
    # ASCII, as JsonText wants).
    truncated = "true" if rows < total else "false"
    return JsonText(f'{text[:-1]},"truncated":{truncated},"total_rows":{total}}}')


def table_json(obj, rows, total):
    """pandas' table JSON of the first `rows` rows, cut further while over `RichData.max_bytes`;
    with the rows it has."""
    to_json = sys.modules["pandas"].core.generic.NDFrame.to_json
    while True:
        part = obj.head(rows) if rows < total else obj
        # Only pandas' own writer makes the JSON a frame can take as it is (a subclass's
        # override could return anything).
        if getattr(type(part), "to_json", None) is not to_json:
            return None, 0
        try:
            text = quick_table_json(part)
        except Exception:  # whatever it did not foresee, pandas' writer may still make
            text = None
        if text is None:
            text = part.to_json(orient="table")
        if len(text) <= RichData.max_bytes:
            return text, rows
        if rows == 0:
            return None, 0
        # Proportionally fewer rows, at least one fewer: a couple of rounds at most.
        rows = min(rows - 1, rows * RichData.max_bytes // len(text))


# What pandas' table writer hands its encoder beside the object: `to_json`'s defaults, with
# orient "table" writing the rows as records and dates as ISO text.
TABLE_ENCODER_OPTIONS = {
    "orient": "records",
    "double_precision": 10,
    "ensure_ascii": True,
    "date_unit": "ms",
    "iso_dates": True,
    "default_handler": None,
    "indent": 0,
}
# The dtypes whose values pandas' encoder gets as Python floats, ints and bools.
QUICK_NUMBER_DTYPES = frozenset(("float64", "int64", "bool"))
# What the json module escapes otherwise than pandas' encoder: DEL (pandas writes it as it is)
# and lone surrogates (pandas cannot encode them). "/" differs too, and is mended.
UNLIKE_PANDAS_ESCAPES = re.compile("[\x7f\ud800-\udfff]")
# Wider tables are left to pandas: each column costs a Series and its own encoder call here,
# where pandas' writer goes through all of them in C; past about ten columns (of 1,000 rows)
# its fixed cost is the smaller.
QUICK_TABLE_MAX_COLUMNS = 8


def quick_table_json(obj):
    """The text `obj.to_json(orient="table")` makes, byte for byte, for a plain DataFrame or
    Series of the common shapes; None for anything else, which pandas' own writer then makes.

    pandas' writer spends milliseconds on `reset_index`, `Index.intersection` and
    `select_dtypes` before it encodes even 100 rows. Here the schema is pandas' own
    `build_table_schema`, numbers go through pandas' own encoder (`ujson_dumps`, as the writer
    calls it), and strings through the json module's ASCII escaping, which is pandas' but for
    the characters mended or refused below. Taken: an index (a RangeIndex too) and columns of
    float64, int64, bool, pandas' "str" or object dtype holding strings (missing as None or
    NaN), with unique, non-empty string names; a Series' name follows pandas' "values" rule.
    bootstrap/test_worker.py holds the two texts equal on a corpus."""
    pandas = sys.modules["pandas"]
    numpy = sys.modules.get("numpy")
    # Found where the writer finds them: a pandas that moved them is left to its own writer.
    dumps = getattr(sys.modules.get("pandas.io.json._json"), "ujson_dumps", None)
    schema_of = getattr(sys.modules.get("pandas.io.json._table_schema"), "build_table_schema", None)
    if numpy is None or dumps is None or schema_of is None:
        return None
    if type(obj) is pandas.Series:
        # pandas writes a series as `obj.to_frame(name=obj.name or "values")`, and its schema
        # names the field "values" only for a name of None: other falsy names are left to it.
        if obj.name is not None and (type(obj.name) is not str or not obj.name):
            return None
        columns = [(obj.name or "values", obj.dtype, obj.array)]
    elif (
        type(obj) is pandas.DataFrame
        and type(obj.columns) is pandas.Index
        and len(obj.columns) <= QUICK_TABLE_MAX_COLUMNS
        # Every column's type first: one pandas must write costs nothing here before it does.
        and all(quick_column_dtype(dtype, pandas, numpy) for dtype in obj.dtypes)
    ):
        columns = [(label, column.dtype, column.array) for label, column in obj.items()]
    else:
        return None
    index = obj.index
    if type(index) is not pandas.RangeIndex and type(index) is not pandas.Index:
        return None
    # The writer names an unnamed index "index" (set_default_names) and refuses a name that is
    # also a column's (the "level_0" of reset_index is never reached).
    index_name = "index" if index.name is None else index.name
    labels = [index_name] + [label for label, _, _ in columns]
    # A NUL would end a column's key early (the writer passes labels as C strings).
    if any(type(label) is not str or not label or "\x00" in label for label in labels):
        return None
    if len(set(labels)) != len(labels):
        return None
    cells = []
    for dtype, array in [(index.dtype, index.array)] + [(d, a) for _, d, a in columns]:
        column = table_cells(dtype, array, pandas, numpy, dumps)
        if column is None or len(column) != len(obj):
            return None
        cells.append(column)
    keys = [dumps(label, **TABLE_ENCODER_OPTIONS).replace("%", "%%") for label in labels]
    row = "{" + ",".join(f"{key}:%s" for key in keys) + "}"
    # One format of all the rows at once: half the time of one format per row.
    data = ",".join([row] * len(obj)) % tuple(itertools.chain.from_iterable(zip(*cells)))
    schema = dumps(schema_of(obj), **TABLE_ENCODER_OPTIONS)
    return f'{{"schema":{schema},"data":[{data}]}}'


def quick_column_dtype(dtype, pandas, numpy):
    """Whether `table_cells` may take a column of `dtype` (its values may still refuse)."""
    if isinstance(dtype, numpy.dtype):
        return dtype.name in QUICK_NUMBER_DTYPES or dtype.kind == "O"
    return isinstance(dtype, pandas.StringDtype) and dtype.na_value is numpy.nan


def table_cells(dtype, array, pandas, numpy, dumps):
    """Each value of a column as pandas' table writer writes it, or None for a column it is not
    known to write so. The writer takes each column as `numpy.asarray` of its array and
    encodes the Python object each element is."""
    if isinstance(dtype, numpy.dtype) and dtype.name in QUICK_NUMBER_DTYPES:
        values = numpy.asarray(array).tolist()
        if not values:
            return values
        # pandas' encoder writes numbers (NaN and infinities as null) without commas.
        cells = dumps(values, **TABLE_ENCODER_OPTIONS)[1:-1].split(",")
        return cells if len(cells) == len(values) else None
    is_str = isinstance(dtype, pandas.StringDtype) and dtype.na_value is numpy.nan
    if not is_str and not (isinstance(dtype, numpy.dtype) and dtype.kind == "O"):
        return None
    values = numpy.asarray(array).tolist()
    strings = [value for value in values if type(value) is str]
    if len(strings) < len(values) and not all(
        value is None or (type(value) is float and value != value)
        for value in values
        if type(value) is not str
    ):
        return None
    text = "".join(strings)
    # ASCII text can hold only one of them, and `in` is fifty times faster than the search.
    if "\x7f" in text if text.isascii() else UNLIKE_PANDAS_ESCAPES.search(text):
        return None
    escape = json.encoder.encode_basestring_ascii
    if "/" not in text:
        return [escape(value) if type(value) is str else "null" for value in values]
    return [escape(value).replace("/", "\\/") if type(value) is str else "null" for value in values]


def finite(value):
    """A float for JSON: NaN and infinities (which JSON has not) become null."""
    value = float(value)
    return value if value - value == 0.0 else None


def axis_reader(axis):
    """Turns the axis' numbers back into what the code plotted: ISO 8601 strings on a date
    axis, the category on a categorical one, else the number. Returns (scale, read)."""
    get_converter = getattr(axis, "get_converter", None)
    converter = get_converter() if get_converter is not None else getattr(axis, "converter", None)
    module = type(converter).__module__ if converter is not None else ""
    if module == "matplotlib.dates":
        from matplotlib import dates

        def read_date(value):
            value = finite(value)
            return None if value is None else dates.num2date(value).isoformat()

        return "datetime", read_date
    if module == "matplotlib.category":
        names = {index: name for name, index in getattr(axis.units, "_mapping", {}).items()}

        def read_category(value):
            value = finite(value)
            if value is None:
                return None
            nearest = round(value)
            return names.get(nearest, value) if abs(value - nearest) < 1e-9 else value

        return "categorical", read_category
    return axis.get_scale(), finite


def label_of(artist):
    """The label the code gave an artist; None for matplotlib's own (`_child0`, `_nolegend_`)."""
    label = artist.get_label()
    return None if not label or label.startswith("_") else str(label)


def points_of(xy, read_x, read_y, limit):
    """At most `limit` (x, y) pairs of an N×2 array, and whether some were left out."""
    import numpy

    cut = len(xy) > limit
    # A scatter masks a whole point where one coordinate is NaN: the values themselves are
    # kept, each NaN becoming null.
    values = numpy.asarray(numpy.ma.getdata(xy[:limit]), dtype=float)
    if read_x is finite and read_y is finite and numpy.isfinite(values).all():
        return values.tolist(), cut
    return [[read_x(x), read_y(y)] for x, y in values.tolist()], cut


def box_elements(ax, limit):
    """Boxes `Axes.bxp` drew on `ax` (recorded by `record_boxes`) from the statistics it drew
    them from; None when it drew none that are still there."""
    recorded = [(stats, positions, artists) for stats, positions, artists in getattr(ax, "_replpool_boxes", ())
                if any(line.axes is ax for line in list(artists.get("medians", ())) + list(artists.get("boxes", ())))]
    if not recorded:
        return None
    elements, cut = [], False
    for stats, positions, _ in recorded:
        for position, box in zip(positions, stats):
            fliers = [finite(v) for v in list(box.get("fliers", ()))[:limit]]
            cut = cut or len(box.get("fliers", ())) > limit
            elements.append(
                {
                    "label": str(box["label"]) if box.get("label") is not None else str(position),
                    "min": finite(box["whislo"]),
                    "q1": finite(box["q1"]),
                    "median": finite(box["med"]),
                    "q3": finite(box["q3"]),
                    "max": finite(box["whishi"]),
                    "outliers": fliers,
                }
            )
    return elements[:limit], cut or len(elements) > limit


def record_boxes():
    """Wraps `Axes.bxp` (what `boxplot` draws with) once, so that a box plot's statistics are
    kept on its axes: its lines alone cannot be told from a line plot's."""
    axes_module = sys.modules.get("matplotlib.axes")
    if axes_module is None:
        return
    axes_class = axes_module.Axes
    if getattr(axes_class.bxp, "_replpool", False):
        return
    draw_boxes = axes_class.bxp

    def bxp(self, bxpstats, positions=None, *args, **kwargs):
        artists = draw_boxes(self, bxpstats, positions, *args, **kwargs)
        try:
            stats = list(bxpstats)
            where = list(positions) if positions is not None else list(range(1, len(stats) + 1))
            self.__dict__.setdefault("_replpool_boxes", []).append((stats, where, artists))
        except Exception:
            pass
        return artists

    bxp._replpool = True
    bxp.__wrapped__ = draw_boxes
    bxp.__doc__ = draw_boxes.__doc__
    axes_class.bxp = bxp


def axes_chart(ax, limit):
    """One axes (subplot) as a chart: its type, title, axes and elements."""
    from matplotlib.collections import PathCollection
    from matplotlib.container import BarContainer
    from matplotlib.patches import Wedge

    scale_x, read_x = axis_reader(ax.xaxis)
    scale_y, read_y = axis_reader(ax.yaxis)
    chart = {
        "type": "unknown",
        "title": ax.get_title() or ax.get_title("left") or ax.get_title("right") or None,
        "x_label": ax.get_xlabel() or None,
        "y_label": ax.get_ylabel() or None,
        "x_scale": scale_x,
        "y_scale": scale_y,
        "elements": [],
        "truncated": False,
    }
    boxes = box_elements(ax, limit)
    wedges = [p for p in ax.patches if isinstance(p, Wedge) and p.get_visible()]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    if boxes is not None:
        chart["type"] = "box"
        chart["elements"], chart["truncated"] = boxes
    elif wedges:
        chart["type"] = "pie"
        chart["elements"] = [
            {"label": label_of(w), "fraction": finite((w.theta2 - w.theta1) / 360.0)} for w in wedges[:limit]
        ]
        chart["truncated"] = len(wedges) > limit
    elif bars:
        chart["type"] = "bar"
        for container in bars:
            group = label_of(container)
            horizontal = getattr(container, "orientation", None) == "horizontal"
            for rect in container.patches:
                if len(chart["elements"]) == limit:
                    chart["truncated"] = True
                    break
                if horizontal:
                    where, value = read_y(rect.get_y() + rect.get_height() / 2), rect.get_width()
                else:
                    where, value = read_x(rect.get_x() + rect.get_width() / 2), rect.get_height()
                chart["elements"].append({"group": group, "label": where, "value": finite(value)})
    else:
        # Lines drawn in data coordinates only: `axhline` and the like span the axes instead.
        lines = [line for line in ax.get_lines() if line.get_visible() and line.get_transform() is ax.transData]
        scatters = [c for c in ax.collections if isinstance(c, PathCollection) and c.get_visible()]
        if lines and not scatters:
            chart["type"] = "line"
        elif scatters and not lines:
            chart["type"] = "scatter"
        series = [(label_of(line), line.get_xydata()) for line in lines]
        series += [(label_of(c), c.get_offsets()) for c in scatters if c.get_offset_transform() is ax.transData]
        for label, xy in series[:limit]:
            points, cut = points_of(xy, read_x, read_y, limit)
            chart["elements"].append({"label": label, "points": points})
            chart["truncated"] = chart["truncated"] or cut
        chart["truncated"] = chart["truncated"] or len(series) > limit
    return chart


def figure_chart(figure):
    """A matplotlib figure as chart data: one chart per axes (colorbars left out), the
    figure's own title; None when it cannot be read."""
    import warnings

    try:
        with warnings.catch_warnings():
            # Reading a figure must not add to the cell's stderr.
            warnings.simplefilter("ignore")
            return read_figure_chart(figure)
    except Exception:
        return None


def read_figure_chart(figure):
    suptitle = getattr(figure, "_suptitle", None)
    charts = [
        axes_chart(ax, RichData.max_rows)
        for ax in figure.get_axes()
        if ax.get_visible() and getattr(ax, "_colorbar", None) is None
    ]
    chart = {
        "title": (suptitle.get_text() or None) if suptitle is not None else None,
        "charts": charts,
        "truncated": any(c["truncated"] for c in charts),
    }
    # NaN has no JSON: refused here (no chart) rather than in the frame.
    return JsonText(json.dumps(chart, separators=(",", ":"), allow_nan=False))


# =================================================================================================
# Errors
# Exceptions made into bounded, interruptible `error` replies.
# =================================================================================================


# A traceback shows at most this many frames from its start and from its end (unbounded
# recursion has a frame per level: a million of them took 36 s to format), each line at most
# TRACEBACK_LINE_CHARS, all of it at most TRACEBACK_CHARS.
TRACEBACK_HEAD_FRAMES = 50
TRACEBACK_TAIL_FRAMES = 50
TRACEBACK_LINE_CHARS = 4096
TRACEBACK_CHARS = 64 * 1024
EVALUE_CHARS = 64 * 1024


class TrimmedStack(traceback.StackSummary):
    """The first and last frames of a long stack, formatted with a line saying how many were
    left out between them."""

    def __init__(self, head, tail, omitted):
        super().__init__(list(head) + list(tail))
        self.head_len = len(head)
        self.omitted = omitted

    def format(self, **kwargs):
        head = traceback.StackSummary.from_list(self[: self.head_len]).format(**kwargs)
        tail = traceback.StackSummary.from_list(self[self.head_len :]).format(**kwargs)
        return head + [f"  [... {self.omitted} frames omitted ...]\n"] + tail


def bounded_stack(tb):
    """The frames of `tb` as a StackSummary, the middle left out when there are too many.

    Only the frames shown are looked at (source lines, positions); the others are counted."""
    count = 0
    t = tb
    while t is not None:
        count += 1
        t = t.tb_next
    if count <= TRACEBACK_HEAD_FRAMES + TRACEBACK_TAIL_FRAMES:
        return traceback.extract_tb(tb)
    head = traceback.extract_tb(tb, limit=TRACEBACK_HEAD_FRAMES)
    t = tb
    for _ in range(count - TRACEBACK_TAIL_FRAMES):
        t = t.tb_next
    tail = traceback.extract_tb(t)
    return TrimmedStack(head, tail, count - TRACEBACK_HEAD_FRAMES - TRACEBACK_TAIL_FRAMES)


def bound_lines(lines):
    """Caps each line and the whole; what is cut from the middle is said in a line."""
    lines = [line if len(line) <= TRACEBACK_LINE_CHARS else line[:TRACEBACK_LINE_CHARS] + "…" for line in lines]
    if sum(len(line) for line in lines) <= TRACEBACK_CHARS:
        return lines
    budget = TRACEBACK_CHARS // 2
    head, used = [], 0
    for line in lines:
        if used + len(line) > budget:
            break
        head.append(line)
        used += len(line)
    tail, used = [], 0
    for line in reversed(lines[len(head) :]):
        if used + len(line) > budget:
            break
        tail.append(line)
        used += len(line)
    tail.reverse()
    omitted = len(lines) - len(head) - len(tail)
    return head + [f"[... {omitted} lines omitted ...]"] + tail


def safe_str(obj):
    try:
        return str(obj)
    except Exception:
        return f"<{type(obj).__name__}: str() failed>"


def error_info(exc, cell_filename=None):
    """ename/evalue/traceback for an exception, without this file's frames.

    Bounded in time and size, since it runs between user code and the reply (with the
    interrupt off): long stacks are cut in the middle (`bounded_stack`), lines and the whole
    capped, and an interrupt while it runs (a `__str__` that loops, say) cuts it short."""
    ename = type(exc).__name__
    evalue = ""
    lines = []
    UserCode.formatting = True
    try:
        evalue = safe_str(exc)
        if len(evalue) > EVALUE_CHARS:
            evalue = evalue[:EVALUE_CHARS] + "…"
        for chunk in format_exception_bounded(exc, first_frame(exc, cell_filename)):
            lines.extend(chunk.rstrip("\n").split("\n"))
    except FormattingInterrupted:
        lines.append("[... the traceback was cut short by an interrupt ...]")
    finally:
        UserCode.formatting = False
    return {"ename": ename, "evalue": evalue, "traceback": bound_lines(lines)}


def first_frame(exc, cell_filename):
    """Where the traceback starts: the first frame of a cell (user code enters through one),
    else past this file's leading frames."""
    tb = exc.__traceback__

    def is_cell(filename):
        return filename == cell_filename or filename.startswith("<cell-")

    first_cell = tb
    while first_cell is not None and not is_cell(first_cell.tb_frame.f_code.co_filename):
        first_cell = first_cell.tb_next
    if first_cell is not None:
        return first_cell
    while tb is not None and tb.tb_frame.f_code.co_filename == WORKER_FILE:
        tb = tb.tb_next
    return tb


def format_exception_bounded(exc, tb):
    """`traceback.format_exception`, with every stack of the chain bounded (`bounded_stack`).

    TracebackException is made with a frame limit (so it never walks a long stack itself);
    then each stack of the chain that may have been cut is replaced by the bounded one."""
    limit = TRACEBACK_HEAD_FRAMES + TRACEBACK_TAIL_FRAMES
    te = traceback.TracebackException(type(exc), exc, tb, limit=limit, compact=True)
    # The TracebackException of each exception of the chain, beside that exception.
    pending = [(te, exc, tb)]
    seen = set()
    while pending:
        t, e, frames = pending.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        if len(t.stack) == limit:
            t.stack = bounded_stack(frames)
        for link in ("__cause__", "__context__"):
            chained_t, chained_e = getattr(t, link, None), getattr(e, link, None)
            if chained_t is not None and chained_e is not None:
                pending.append((chained_t, chained_e, chained_e.__traceback__))
    return te.format()


# =================================================================================================
# Cells: running one, and the worker's request loop
# run_cell, a request's stdin, and the Worker that serves `exec` and `attach`.
# =================================================================================================


class CompiledCells:
    """Cells compiled before, by their source. A judge runs one program against case after
    case, a notebook re-runs its cells, and for a short cell parsing and compiling is most of
    what the worker spends. Code objects are immutable, so one can be run again; only the file
    name tracebacks show differs from cell to cell (`<cell-N>`), and giving a code object
    another costs far less than compiling it again."""

    MAX_ENTRIES = 64
    MAX_SOURCE = 64 * 1024

    def __init__(self):
        self.entries = {}

    def get(self, code, filename):
        """(body, final expression or None) for the code, compiled as `filename`."""
        entry = self.entries.get(code)
        if entry is None:
            entry = compile_cell(code, filename)
            if len(code) <= self.MAX_SOURCE:
                if len(self.entries) >= self.MAX_ENTRIES:
                    del self.entries[next(iter(self.entries))]  # the oldest
                self.entries[code] = entry
        elif entry[0].co_filename != filename:
            entry = tuple(None if c is None else renamed(c, filename) for c in entry)
            self.entries[code] = entry
        return entry


def renamed(code, filename):
    """A code object and the ones nested in it (functions, classes, comprehensions), with
    another file name."""
    consts = tuple(renamed(c, filename) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def compile_cell(code, filename):
    """The cell as a body and the final expression whose value it shows (or None)."""
    try:
        tree = ast.parse(code, filename, "exec")
    except SyntaxError as exc:
        # The parser's own frames (ast.py, this file) mean nothing to the user.
        raise exc.with_traceback(None) from None
    last = None
    # As in IPython, a trailing semicolon hides the value of the last expression.
    if tree.body and isinstance(tree.body[-1], ast.Expr) and not code.rstrip().endswith(";"):
        last = ast.Expression(tree.body.pop().value)
    body = compile(tree, filename, "exec")
    final = compile(last, filename, "eval") if last is not None else None
    return body, final


COMPILED = CompiledCells()


def run_cell(code, namespace, filename):
    """Runs code like a notebook cell; returns the value of a final expression (or None)."""
    # Registering the source lets tracebacks show the offending lines.
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    try:
        body, final = COMPILED.get(code, filename)
    except (SyntaxError, ValueError) as exc:
        # The cell does not parse (a null byte is a ValueError before Python 3.12); a
        # SyntaxError raised later, by code the cell runs, is the cell's runtime error.
        exc._replpool_compiling = True
        raise
    UserCode.active = True
    try:
        exec(body, namespace)
        if final is not None:
            return eval(final, namespace)
        return None
    finally:
        UserCode.active = False


class StdinFile:
    """Points fd 0 at a request's stdin for one execution (an in-memory file, never a pipe that
    could fill up), and back at /dev/null afterwards."""

    def __init__(self, devnull, stdio):
        self.devnull = devnull
        self.stdio = stdio
        self.replaced = False

    def set(self, text):
        """At the start of a cell: fd 0 is the request's stdin, else /dev/null, whatever the
        last cell did to it (closed it, or pointed it elsewhere)."""
        if text is None:
            os.dup2(self.devnull, 0)
            if self.replaced:
                self.replaced = False
                self.stdio.renew_stdin()
            return
        fd = os.memfd_create("replpool-stdin")
        os.write(fd, text.encode("utf-8"))
        os.lseek(fd, 0, os.SEEK_SET)
        if fd != 0:  # a cell that closed fd 0 made it the lowest free one: it is in place
            os.dup2(fd, 0)
            os.close(fd)
        self.replaced = True
        self.stdio.renew_stdin()

    def release(self):
        """At the end of a cell: the request's stdin is not kept."""
        if self.replaced:
            self.set(None)


class Worker:
    def __init__(
        self, protocol, base, capture, stdio, devnull, server_pid, parent_tie=None, syscall_filter=None, isolation=None
    ):
        self.protocol = protocol
        self.pid = os.getpid()
        self.server_pid = server_pid
        self.parent_tie = parent_tie
        self.base = base
        self.capture = capture
        self.stdio = stdio
        self.stdin = StdinFile(devnull, stdio)
        self.cpu = CpuLimit()
        # The server's seccomp filter: installed once the worker's own privileged set-up is
        # done (attach), and in any case before the first user code.
        self.syscall_filter = syscall_filter
        # What the server set up around workers (namespaces, the view), finished at attach.
        self.isolation = isolation
        self.namespace = None
        # The session's package layer on sys.path (the exec request's `packages`), and the
        # directory it is relative to (the session's, from attach).
        self.session_dir = None
        self.layer = None
        self.layer_path = None
        self.reset()

    def reset(self):
        """A fresh copy of the base namespace, installed as __main__ so pickle finds classes."""
        module = types.ModuleType("__main__")
        module.__dict__.update(self.base)
        sys.modules["__main__"] = module
        self.namespace = module.__dict__

    def warm_up(self):
        """Runs one throw-away cell through the whole path, so that the copy-on-write faults
        and first-call costs are paid before the worker is handed out, not by the first cell."""
        self.execute({"id": 0, "code": "_ = 1 + 1\n_", "count": 0})
        self.reset()

    def serve(self):
        while True:
            request = self.protocol.read()
            if request is None:
                return
            if self.parent_tie is not None:
                self.parent_tie.ensure()
            op = request.get("op")
            rid = request.get("id")
            if op == "exec":
                self.confine()
                self.protocol.send_encoded(self.execute(request))
            elif op == "attach":
                self.attach(request)
                self.protocol.send({"op": "done", "id": rid, "status": "ok"})
            else:
                self.protocol.send(
                    {
                        "op": "done",
                        "id": rid,
                        "status": "error",
                        "error": {"ename": "ProtocolError", "evalue": f"unknown op {op!r}", "traceback": []},
                    }
                )

    def attach(self, request):
        """Binds the worker to a session: its directory, and (when the server is root) its
        user, for good. A worker that cannot become the user must not run anything."""
        cwd = request["cwd"]
        try:
            confine_to_session(self.isolation, cwd, request.get("shared"))
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os.chdir(cwd)
        self.session_dir = cwd
        user = request.get("user")
        if user is not None:
            try:
                become_user(user, self.server_pid)
            except BaseException:
                traceback.print_exc()
                os._exit(1)
        # Temporary files and dotfiles land in the session directory (and count against its
        # quota), not in a directory every session shares.
        os.environ["HOME"] = cwd
        os.environ["TMPDIR"] = cwd
        tempfile = sys.modules.get("tempfile")
        if tempfile is not None:
            tempfile.tempdir = cwd
        self.confine()

    def confine(self):
        """Installs the syscall filter, once. A worker that cannot must not run anything."""
        if self.syscall_filter is None:
            return
        try:
            install_syscall_filter(self.syscall_filter)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        self.syscall_filter = None

    def use_packages(self, layer):
        """Puts the session's package layer first on sys.path (in place of the one before),
        before the cell: what an install added is importable from this cell on, and the
        namespace is kept. Relative to the session directory, not the cwd code may change."""
        if layer == self.layer or self.session_dir is None:
            return
        if self.layer_path is not None:
            while self.layer_path in sys.path:
                sys.path.remove(self.layer_path)
        self.layer = layer
        self.layer_path = os.path.join(self.session_dir, layer) if layer else None
        if self.layer_path is not None:
            sys.path.insert(0, self.layer_path)
        importlib.invalidate_caches()

    def execute(self, request):
        rid = request["id"]
        self.use_packages(request.get("packages"))
        # The name tracebacks give the cell: `<cell-N>`, or a script's file name.
        filename = request.get("filename") or f"<cell-{request.get('count', 0)}>"
        streaming = bool(request.get("stream"))
        displays = []

        def stream_to(name, text):
            self.protocol.send({"op": "stream", "id": rid, "name": name, "text": text})

        def emit(bundle):
            max_frame = self.protocol.max_frame
            frame = None
            if streaming or not surely_fits(bundle, max_frame):
                frame = self.protocol.encode({"op": "display", "id": rid, "data": bundle})
                if len(frame) > max_frame and any(mime in bundle for mime in DATA_MIMES):
                    # The data is an extra: the picture or text goes without it.
                    bundle = without_data(bundle)
                    frame = self.protocol.encode({"op": "display", "id": rid, "data": bundle})
                if len(frame) > max_frame:
                    # It could never be sent: an error of the code that showed it, in either mode.
                    raise OutputLimitExceeded(
                        f"a displayed output of {len(frame)} bytes is over the limit of "
                        f"{max_frame} bytes (execution.max_frame_bytes)"
                    )
            if streaming:
                self.capture.flush_pending()
                self.protocol.send_encoded(frame)
            else:
                displays.append(bundle)

        sink = Sink(int(request.get("max_output_bytes", 1 << 20)), stream_to if streaming else None)
        self.capture.restore_fds()
        self.stdin.set(request.get("stdin"))
        self.stdio.install()
        hook_pyplot()
        Display.emit = emit
        RichData.enabled = bool(request.get("data", True))
        RichData.max_rows = max(0, int(request.get("max_table_rows", 1000)))
        RichData.max_bytes = self.protocol.max_frame // 4
        self.capture.start(sink)
        cpu_seconds = request.get("cpu_seconds")
        self.cpu.arm(cpu_seconds)
        cpu_before = self.cpu.used_with_children()
        status, result, error, category = "ok", None, None, None
        try:
            value = run_cell(request["code"], self.namespace, filename)
            if value is not None:
                self.namespace["_"] = value
                # Its reprs are the cell's code: an interrupt must reach them too.
                UserCode.active = True
                try:
                    result = mime_bundle(value)
                finally:
                    UserCode.active = False
        except SystemExit as exc:
            # A program's sys.exit(0) is a normal end; any other code is reported, never obeyed.
            if exc.code not in (None, 0):
                status, error, category = "error", error_info(exc, filename), "runtime"
        except BaseException as exc:  # noqa: B036 - user code may raise anything
            status, error, category = "error", error_info(exc, filename), error_category(exc)
        if os.getpid() != self.pid:
            # A process the cell forked (`os.fork()`) came back out of the cell. It is not the
            # worker and must never speak the protocol: it ends here, as a script would.
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except BaseException:
                    pass
            os._exit(0 if status == "ok" else 1)
        self.cpu.disarm(cpu_seconds)
        try:
            show_figures()
        except Exception as exc:
            if error is None:
                status, error, category = "error", error_info(exc, filename), error_category(exc)
        cpu_ms = round((self.cpu.used_with_children() - cpu_before) * 1000, 3)
        Display.emit = None
        RichData.enabled = False
        stdout, stderr, truncated = self.capture.stop()
        self.stdin.release()
        reply = {
            "op": "done",
            "id": rid,
            "status": status,
            "stdout": stdout,
            "stderr": stderr,
            "result": result,
            "display": displays,
            "error": error,
            "truncated": truncated,
            "category": category,
            "cpu_ms": max(cpu_ms, 0.0),
        }
        data = self.protocol.encode(reply)
        if len(data) > self.protocol.max_frame and (
            any(mime in bundle for bundle in [result or {}, *displays] for mime in DATA_MIMES)
        ):
            # The data keys are extras: the pictures and reprs go without them first.
            reply["result"] = without_data(result) if result else None
            reply["display"] = [without_data(bundle) for bundle in displays]
            reply["truncated"] = True
            data = self.protocol.encode(reply)
        if len(data) > self.protocol.max_frame:
            # The rich parts are what can be huge; keep the status, the (capped) output, the error.
            reply["result"] = {"text/plain": "<result too large to return>"} if result else None
            reply["display"] = []
            reply["truncated"] = True
            data = self.protocol.encode(reply)
        while len(data) > self.protocol.max_frame and (reply["stdout"] or reply["stderr"]):
            # Escaping can make capped output larger than the frame; halve it until it fits.
            reply["stdout"] = reply["stdout"][: len(reply["stdout"]) // 2]
            reply["stderr"] = reply["stderr"][: len(reply["stderr"]) // 2]
            data = self.protocol.encode(reply)
        if len(data) > self.protocol.max_frame and error is not None:
            error["evalue"] = error["evalue"][:1000]
            error["traceback"] = error["traceback"][-20:]
            data = self.protocol.encode(reply)
        return data


# =================================================================================================
# Start-up: the preload and a plain worker's main
# The base namespace every session copies, and `python worker.py` started directly.
# =================================================================================================


def build_base_namespace(preload, best_effort=False, log=None):
    """Imports the preload list (`module` or `module as alias`, as in an import statement).

    A cold worker imports what it can: it is the fallback for when preloaded workers cannot
    start, so a broken preload entry must not stop it.
    """
    base = {
        "__name__": "__main__",
        "__builtins__": __builtins__,
        "__doc__": None,
        "display": display,
    }
    for spec in preload:
        try:
            exec(f"import {spec}", base)
        except BaseException as exc:
            if not best_effort:
                raise
            if log is not None:
                log.write(f"replpool: preload `{spec}` failed, continuing without it: {exc!r}\n")
    return base


def font_cache_dir():
    """Where matplotlib's font list is built once for this interpreter (`make venv`, the
    image's build): in its own installation, so that it goes with the fonts and matplotlib it
    lists and nothing is cached outside the venv. Read-only to every worker."""
    return os.path.join(sys.prefix, "share", "replpool", "matplotlib")


def build_font_cache():
    """`worker.py '{"font_cache": "build"}'`: builds the font list into `font_cache_dir()`,
    rebuilding a stale one (matplotlib checks its version)."""
    os.makedirs(font_cache_dir(), exist_ok=True)
    os.environ["MPLCONFIGDIR"] = font_cache_dir()
    try:
        import matplotlib.font_manager  # noqa: F401  (builds and writes the list)
    except ImportError:
        return 0  # no matplotlib in this interpreter: nothing to cache
    return 0


def use_font_cache(own_tmp):
    """Before the preload: gives matplotlib the font list built once (`font_cache_dir()`)
    instead of letting it list and read every font again (a third of a second of CPU, in
    every template, direct and cold worker: their HOME is a fresh /tmp in the view).

    matplotlib wants a writable configuration directory (else it makes a temporary one and
    rebuilds), and the cache is read-only to workers: a process with a /tmp of its own gets a
    copy of the list in a directory there; another uses the cache in place only where it may
    write it anyway. Returns the directory it set as MPLCONFIGDIR, if any: the operator's own
    MPLCONFIGDIR wins."""
    if os.environ.get("MPLCONFIGDIR"):
        return None
    cache = font_cache_dir()
    try:
        names = [n for n in os.listdir(cache) if n.startswith("fontlist-") and n.endswith(".json")]
    except OSError:
        return None
    if not names:
        return None
    if own_tmp:
        import shutil

        config = "/tmp/matplotlib"
        try:
            os.makedirs(config, mode=0o700, exist_ok=True)
            for name in names:
                shutil.copyfile(os.path.join(cache, name), os.path.join(config, name))
        except OSError:
            return None
    elif os.access(cache, os.W_OK):
        config = cache
    else:
        return None
    os.environ["MPLCONFIGDIR"] = config
    return config


def warm_up():
    """Pays once, in the template, what a first cell would otherwise pay in every worker: the
    first DataFrame repr and table, the first figure drawn to PNG and read as a chart, the cell
    machinery itself."""
    RichData.enabled = True
    try:
        run_cell("_ = 1 + 1", {}, "<warm-up>")
        error_info(ValueError("warm-up"))
        json.dumps({"a": [1, 2.5, None, "x"]})
        pandas = sys.modules.get("pandas")
        if pandas is not None:
            frame = pandas.DataFrame({"a": [1, 2], "b": ["x", "y"]})
            mime_bundle(frame)
            frame.groupby("a")["a"].count()
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            hook_pyplot()
            pyplot.plot([1, 2, 3])
            open_figures()
        _libc_fflush()
        import resource  # noqa: F401  (CpuLimit)
    except Exception:
        traceback.print_exc()
    finally:
        RichData.enabled = False


def common_setup(log):
    """What every kind of worker process does before the preload."""
    import faulthandler

    faulthandler.enable(file=log)
    # The script's own directory must not shadow user modules; the session directory should.
    script_dir = os.path.dirname(WORKER_FILE)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != script_dir]
    sys.path.insert(0, "")
    signal.signal(signal.SIGINT, UserCode.on_sigint)
    signal.signal(signal.SIGXCPU, UserCode.on_sigxcpu)


def serve_worker(protocol, base, devnull, started, server_pid, parent_tie=None, syscall_filter=None, isolation=None):
    """Sets up output capture and serves requests until the server closes the pipe."""
    global _FFLUSH
    _FFLUSH = _libc_fflush()
    stdio = Stdio()
    capture = Capture(stdio)
    stdio.install()
    worker = Worker(protocol, base, capture, stdio, devnull, server_pid, parent_tie, syscall_filter, isolation)
    worker.warm_up()
    protocol.send(
        {
            "op": "ready",
            "pid": os.getpid(),
            "python": sys.version.split()[0],
            "preload_ms": (time.monotonic() - started) * 1000.0,
        }
    )
    worker.serve()
    return 0


def worker_main(settings):
    """A worker started directly by the server (or a cold one), protocol on fds 0 and 1."""
    started = time.monotonic()
    # First of all, move the protocol off fds 0/1: nothing after this can corrupt it.
    proto_in = os.dup(0)
    proto_out = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # anything printed during the preload goes to the server's log
    protocol = Protocol(proto_in, proto_out, int(settings.get("max_frame_bytes", 16 << 20)))
    # The worker's own diagnostics (the server logs them), kept apart from user output: a
    # private copy of the stderr the server gave us. A crash in C code dumps tracebacks here.
    log = open(os.dup(2), "w", buffering=1, closefd=True)
    # Still one thread: before any import starts one.
    enter_namespaces(settings.get("isolation"))
    if (settings.get("isolation") or {}).get("user_namespace"):
        limit_processes(settings["isolation"])  # its own user namespace: its own count
    own_pid_namespace(settings.get("isolation"))
    if settings.get("private_tmp"):
        private_tmp(settings["private_tmp"])
    common_setup(log)
    use_font_cache(bool(settings.get("private_tmp")))
    try:
        base = build_base_namespace(settings.get("preload", []), bool(settings.get("cold")), log)
    except BaseException as exc:
        protocol.send({"op": "fatal", "error": error_info(exc)})
        return 1
    server_pid = int(settings.get("server_pid") or os.getppid())
    return serve_worker(
        protocol, base, devnull, started, server_pid, syscall_filter=settings.get("seccomp"), isolation=settings.get("isolation")
    )


# =================================================================================================
# Zygote (template)
# One preloaded process that only forks workers, and the tie of a forked worker to the
# server.
# =================================================================================================


class Template:
    """The zygote: imports the preload once, then forks a worker per request.

    Requests arrive as datagrams on fd 0 (a socket pair end), each carrying the new worker's
    protocol descriptors (requests, replies, log) as SCM_RIGHTS. The worker is forked twice
    over, so that it is re-parented to the server (a child subreaper), which can then signal,
    watch and reap it like any child of its own; the template keeps no state about it.

    Where the server is not a subreaper (`keep_workers`: replpool.Pool, embedded in a Python
    process that must keep its own children's exit statuses), the template is the subreaper
    instead: workers are re-parented to it and tie their lives to it, and the detached
    processes of their cells come back to it, which kills them (`sweep`). A worker's zombie is
    kept until the server, having killed the worker's process group, says `reap`: until then
    that group id cannot be reused by a process the server would kill by mistake.
    """

    def __init__(self, settings):
        self.settings = settings
        self.control = socket.socket(fileno=os.dup(0))
        self.devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(self.devnull, 0)
        os.dup2(2, 1)
        self.log = open(os.dup(2), "w", buffering=1, closefd=True)
        self.server_pid = os.getppid()
        self.keep_workers = bool(settings.get("keep_workers"))
        # Whom a forked worker is re-parented to, and so ties its life to.
        self.workers_parent = os.getpid() if self.keep_workers else self.server_pid
        # Forked workers whose zombies the server has not released yet.
        self.workers = set()
        self.base = None

    def send(self, message):
        self.control.send(json.dumps(message).encode("utf-8", "replace"))

    def run(self):
        started = time.monotonic()
        # Still one thread: before any import starts one.
        enter_namespaces(self.settings.get("isolation"))
        if self.settings.get("private_tmp"):
            private_tmp(self.settings["private_tmp"])
        common_setup(self.log)
        use_font_cache(bool(self.settings.get("private_tmp")))
        if self.keep_workers:
            set_child_subreaper()
        try:
            self.base = build_base_namespace(self.settings.get("preload", []))
        except BaseException as exc:
            self.send({"op": "fatal", "error": error_info(exc)})
            return 1
        warm_up()
        # Objects made so far are never collected, so the collector does not touch (and so
        # copy) the pages that forked workers share with the template.
        gc.freeze()
        self.send(
            {
                "op": "ready",
                "pid": os.getpid(),
                "python": sys.version.split()[0],
                "preload_ms": (time.monotonic() - started) * 1000.0,
            }
        )
        while True:
            if self.keep_workers:
                ready, _, _ = select.select([self.control], [], [], TEMPLATE_SWEEP_INTERVAL)
                if not ready:
                    self.sweep()
                    continue
            message, fds, _, _ = socket.recv_fds(self.control, 65536, 3)
            if not message:
                self.end_children()
                return 0
            request = json.loads(message)
            op = request.get("op")
            if op in ("reap", "exit"):
                for fd in fds:
                    os.close(fd)
                if op == "exit":
                    self.end_children()
                    return 0
                self.workers.discard(int(request.get("pid") or 0))
                self.sweep()
                continue
            try:
                if len(fds) != 3:
                    raise ProtocolError(f"fork request with {len(fds)} descriptors, not 3")
                pid = self.fork(fds)
                if self.keep_workers:
                    self.workers.add(pid)
                self.send({"op": "forked", "id": request.get("id"), "pid": pid})
            except Exception as exc:
                self.send({"op": "error", "id": request.get("id"), "error": error_info(exc)})
            finally:
                for fd in fds:
                    os.close(fd)
            self.reap_intermediates()

    def fork(self, fds):
        """Forks a worker through a short-lived intermediate; returns the worker's pid.

        The intermediate is reaped later (`reap_intermediates`): its exit tears down a copy of
        the template's address space, which takes milliseconds nobody needs to wait for.
        """
        r, w = os.pipe()
        intermediate = os.fork()
        if intermediate == 0:
            code = 0
            try:
                os.close(r)
                namespaces_per_worker(self.settings.get("isolation"))
                pid = os.fork()
                if pid == 0:
                    os.close(w)
                    self.become_worker(fds)  # never returns
                os.write(w, str(pid).encode())
            except BaseException:
                traceback.print_exc(file=self.log)
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        data = os.read(r, 64)
        os.close(r)
        if not data:
            raise RuntimeError("the intermediate process died before forking the worker")
        return int(data)

    def reap_intermediates(self):
        if self.keep_workers:
            # waitpid(-1) would reap workers the server has not released.
            self.sweep()
            return
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    def children(self):
        """This template's children (zombies included), as the kernel lists them."""
        found = set()
        try:
            tasks = os.listdir("/proc/self/task")
        except OSError:
            return found
        for tid in tasks:
            try:
                with open(f"/proc/self/task/{tid}/children") as f:
                    found.update(int(p) for p in f.read().split())
            except (OSError, ValueError):
                pass
        return found

    def sweep(self):
        """Kills and reaps every child that is not a worker still held for the server: spent
        intermediates, released workers, and what cells detached (orphans re-parented here)."""
        others = self.children() - self.workers
        for pid in others:
            kill_with_group(pid)
        for pid in others:
            try:
                os.waitpid(pid, os.WNOHANG)  # one still dying is reaped by the next sweep
            except ChildProcessError:
                pass

    def end_children(self):
        """On the way out: no worker, nor anything a cell started, outlives the template."""
        for pid in self.children():
            kill_with_group(pid)

    def become_worker(self, fds):
        """In the forked worker: cut every tie to the template, then serve like any worker."""
        code = 1
        try:
            started = time.monotonic()
            os.setpgid(0, 0)
            if self.settings.get("private_tmp"):
                private_tmp(self.settings["private_tmp"])  # a forked child has one thread
            req_r, rep_w, log_w = fds
            keep = {0, 1, 2, req_r, rep_w, log_w}
            for name in os.listdir("/proc/self/fd"):
                fd = int(name)
                if fd not in keep:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            for fd in (req_r, rep_w, log_w):
                os.set_inheritable(fd, False)
            os.dup2(log_w, 2)
            os.dup2(log_w, 1)
            log = open(log_w, "w", buffering=1, closefd=True)
            import faulthandler

            faulthandler.enable(file=log)
            reseed()
            protocol = Protocol(req_r, rep_w, int(self.settings.get("max_frame_bytes", 16 << 20)))
            code = serve_worker(
                protocol,
                self.base,
                os.open(os.devnull, os.O_RDWR),
                started,
                self.workers_parent,
                ParentTie(self.workers_parent),
                self.settings.get("seccomp"),
                self.settings.get("isolation"),
            )
        except BaseException:
            try:
                traceback.print_exc()
            except BaseException:
                pass
        finally:
            os._exit(code)


def kill_with_group(pid):
    """SIGKILL to a child and, where it leads one, its process group. Safe from pid reuse: the
    caller has not reaped it."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


class ParentTie:
    """Ties a forked worker's life to the server's once it is the server's child.

    The worker is re-parented to the server only when the intermediate process has exited,
    which takes a few milliseconds (it tears down a copy of the template's memory). The worker
    does not wait for that to get ready: before it runs any request it makes sure its parent
    is the server and sets the death signal (which is relative to the current parent). Until
    then a server that dies closes the protocol pipe, and the worker exits on that.
    """

    def __init__(self, server_pid):
        self.server_pid = server_pid
        self.tied = False

    def ensure(self):
        if self.tied:
            return
        deadline = time.monotonic() + 10.0
        while parent_pid() != self.server_pid:
            if parent_pid() == 1 or time.monotonic() > deadline:
                os._exit(1)  # the server is gone (or is not a subreaper)
            time.sleep(0.0002)
        set_parent_death_signal()
        if parent_pid() != self.server_pid:
            os._exit(1)
        self.tied = True


def parent_pid():
    """The parent's pid as the server knows it. A worker that is the first process of a pid
    namespace of its own sees its parent as 0; the machine's /proc (still mounted until the
    attach) tells the real one."""
    ppid = os.getppid()
    if ppid != 0:
        return ppid
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("PPid:"):
                return int(line.split()[1])
    return 0


# =================================================================================================
# Sandbox set-up
# Done by the worker itself, as root and single-threaded, before any user code: its own
# /tmp, the seccomp filter, the session's user, the death signal, fresh random seeds.
# =================================================================================================


class Kernel:
    """The system calls the sandbox set-up needs that Python has no binding for, through libc
    (standard library only: ctypes). Each raises OSError naming what failed."""

    CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, 0x40000000
    CLONE_NEWIPC = 0x08000000
    MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
    MS_REMOUNT, MS_BIND, MS_REC, MS_SLAVE = 0x20, 0x1000, 0x4000, 0x80000
    MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 0x400, 0x800, 0x200000
    MNT_DETACH = 2
    # Neither pivot_root nor capset has a libc wrapper.
    SYSCALLS = {"x86_64": {"pivot_root": 155, "capset": 126}, "aarch64": {"pivot_root": 41, "capset": 91}}

    def __init__(self):
        import ctypes
        import platform

        self.ctypes = ctypes
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
        self.libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        self.libc.syscall.restype = ctypes.c_long
        self.numbers = self.SYSCALLS.get(platform.machine(), {})

    def check(self, result, what):
        if result != 0:
            errno = self.ctypes.get_errno()
            raise OSError(errno, f"{what}: {os.strerror(errno)}")

    def unshare(self, flags, what):
        self.check(self.libc.unshare(flags), f"unshare({what})")

    def mount(self, source, target, fstype, flags, data=None):
        enc = lambda s: s.encode() if isinstance(s, str) else s  # noqa: E731
        result = self.libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data))
        self.check(result, f"mount {source or ''} on {target}")

    def bind(self, fd, target, writable):
        """Binds what `fd` (O_PATH) refers to at `target`, read-only unless `writable`. A
        read-only remount must keep the flags the kernel locked on the source (nosuid, nodev,
        noexec, atime: in a user namespace a remount that drops them is refused)."""
        self.mount(f"/proc/self/fd/{fd}", target, None, self.MS_BIND | self.MS_REC)
        if not writable:
            self.mount(None, target, None, self.MS_REMOUNT | self.MS_BIND | self.MS_RDONLY | self.locked_flags(fd))

    def locked_flags(self, fd):
        flag = os.fstatvfs(fd).f_flag
        pairs = [
            (os.ST_NOSUID, self.MS_NOSUID),
            (os.ST_NODEV, self.MS_NODEV),
            (os.ST_NOEXEC, self.MS_NOEXEC),
            (os.ST_NOATIME, self.MS_NOATIME),
            (os.ST_NODIRATIME, self.MS_NODIRATIME),
            (os.ST_RELATIME, self.MS_RELATIME),
        ]
        return sum(ms for st, ms in pairs if flag & st)

    def syscall(self, name, *args):
        number = self.numbers.get(name)
        if number is None:
            raise OSError(f"{name}: no system call number known for this architecture")
        c = self.ctypes
        self.check(0 if self.libc.syscall(c.c_long(number), *args) == 0 else -1, name)

    def pivot_root(self):
        """Makes the current directory (a mount point) the root, and lets the old one go."""
        self.syscall("pivot_root", b".", b".")
        self.check(self.libc.umount2(b".", self.MNT_DETACH), "unmounting the old root")
        os.chdir("/")

    def drop_capabilities(self):
        """Empties the effective, permitted and inheritable sets (capset, version 3). A worker
        in a user namespace holds every capability in it, from its creation; its uid is not 0
        there, so nothing it executes afterwards gets any back (and NO_NEW_PRIVS is set)."""
        c = self.ctypes
        header = (c.c_uint32 * 2)(0x20080522, 0)
        data = (c.c_uint32 * 6)()
        self.syscall("capset", c.byref(header), c.byref(data))


def enter_namespaces(isolation):
    """First thing in the template and in a direct or cold worker, while it has one thread
    (unshare refuses a threaded caller) and before any import: the namespaces the server's
    probe found possible (`sandbox/isolation.rs`), and the filesystem view. A server that is not
    root gets them through a user namespace of its own, as bubblewrap does: the worker is its
    own uid there too (one mapped uid), with every capability *in* the namespace, which it
    gives up when it is attached."""
    if not isolation:
        return
    kernel = Kernel()
    flags = 0
    if isolation.get("user_namespace"):
        flags |= Kernel.CLONE_NEWUSER
    if isolation.get("network_none"):
        flags |= Kernel.CLONE_NEWNET
    if isolation.get("mount_namespace"):
        # SysV and POSIX message queues too: they would otherwise be the machine's, shared by
        # every session and outliving them.
        flags |= Kernel.CLONE_NEWNS | Kernel.CLONE_NEWIPC
    if not flags:
        return
    uid, gid = os.getuid(), os.getgid()
    kernel.unshare(flags, "namespaces")
    if isolation.get("user_namespace"):
        map_own_ids(uid, gid)
    if isolation.get("network_none"):
        loopback_up()
    if isolation.get("mount_namespace"):
        # Nothing mounted here may reach the namespace it came from; what the server mounts
        # later (a session directory's own tmpfs) still comes in: a slave.
        kernel.mount(None, "/", None, Kernel.MS_REC | Kernel.MS_SLAVE)
        if isolation.get("view"):
            enter_view(kernel, isolation["view"])


def namespaces_per_worker(isolation):
    """In the template's intermediate process, before it forks a worker: what each worker must
    have of its own rather than share with the template's other workers. A network namespace
    (loopback is per namespace: a service one session runs on 127.0.0.1, or an abstract unix
    socket, would otherwise be every session's), an IPC namespace (SysV shared memory and
    message queues), and where sessions share a uid, a pid namespace whose first process the
    worker is (so they cannot signal or see each other's processes). Needs one thread and
    CAP_SYS_ADMIN: the intermediate has both."""
    if not isolation:
        return
    flags = 0
    if isolation.get("network_none"):
        flags |= Kernel.CLONE_NEWNET
    if isolation.get("mount_namespace"):
        flags |= Kernel.CLONE_NEWIPC
    if isolation.get("pid_namespace"):
        flags |= Kernel.CLONE_NEWPID
    if isolation.get("user_namespace"):
        # Its own user namespace too (created first, owning the others): processes are counted
        # per uid and user namespace, so RLIMIT_NPROC bounds this worker's alone.
        flags |= Kernel.CLONE_NEWUSER
    if not flags:
        return
    uid, gid = os.getuid(), os.getgid()
    Kernel().unshare(flags, "per-worker namespaces")
    if isolation.get("user_namespace"):
        map_own_ids(uid, gid)
        limit_processes(isolation)
    if isolation.get("network_none"):
        loopback_up()


def limit_processes(isolation):
    """RLIMIT_NPROC for a worker in a user namespace of its own: where sessions share a uid and
    no pids cgroup holds them, what bounds one session's processes and threads (counted by the
    kernel per uid in that namespace, since Linux 5.14; on older kernels per uid, the server's
    processes included)."""
    import resource

    limit = isolation.get("processes")
    if limit:
        resource.setrlimit(resource.RLIMIT_NPROC, (int(limit), int(limit)))


def own_pid_namespace(isolation):
    """A direct or cold worker (started by the server, not forked from the template) gets a pid
    namespace too, where sessions share a uid: it unshares one and forks, the child becomes the
    worker, the first process there, and this process stays as its relay — the pid the server
    knows: it passes the interrupt and termination signals on, and exits as the worker does.
    The worker dies with it (its death signal), and everything in the namespace with the
    worker. Returns in the worker; never in the relay."""
    if not (isolation and isolation.get("pid_namespace")):
        return
    Kernel().unshare(Kernel.CLONE_NEWPID, "CLONE_NEWPID")
    child = os.fork()
    if child == 0:
        set_parent_death_signal()
        return
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGXCPU):
        signal.signal(signum, lambda s, _frame: os.kill(child, s))
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            os._exit(1)
    if os.WIFSIGNALED(status):
        # Die as the worker died, so that the server reads the same cause (an OOM kill).
        signum = os.WTERMSIG(status)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def map_own_ids(uid, gid):
    """In a new user namespace: the caller's uid and gid map to themselves (the only mapping
    an unprivileged process may write), and setgroups is off, as the kernel requires first."""
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1\n"), ("gid_map", f"{gid} {gid} 1\n")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)


def loopback_up():
    """A new network namespace has `lo`, down: up (SIOCSIFFLAGS), so that code can still talk
    to itself over 127.0.0.1."""
    import fcntl

    siocgifflags, siocsifflags, iff_up, iff_running = 0x8913, 0x8914, 0x1, 0x40
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, siocgifflags, request))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up | iff_running))


def enter_view(kernel, view):
    """Replaces the root with a minimal one (docs/architecture.md, "Filesystem view"): a
    tmpfs holding only what the server listed — the system's /usr and libraries, the Python
    installation, a small /etc, a few /dev nodes, /proc, the state directory — each bound
    read-only at its own path except the session and scratch directories. Everything else of
    the machine is absent. The sources are opened before anything is covered, then bound by
    descriptor; the tmpfs is staged on /tmp (this namespace's own) and pivoted into."""
    import stat

    held = []
    try:
        for bind in view["binds"]:
            try:
                fd = os.open(bind["path"], os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            held.append((bind, fd, stat.S_ISDIR(os.fstat(fd).st_mode)))
        proc = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        held.append(({"path": "/proc", "writable": True}, proc, True))
        root = "/tmp"
        kernel.mount("tmpfs", root, "tmpfs", Kernel.MS_NOSUID | Kernel.MS_NODEV, "mode=0755,size=16m,nr_inodes=16384")
        for path, mode in view["dirs"]:
            os.makedirs(root + path, exist_ok=True)
            os.chmod(root + path, mode)
        for path, target in view["symlinks"]:
            os.makedirs(os.path.dirname(root + path), exist_ok=True)
            os.symlink(target, root + path)
        for path, text in view["files"]:
            os.makedirs(os.path.dirname(root + path), exist_ok=True)
            with open(root + path, "w") as f:
                f.write(text)
            os.chmod(root + path, 0o644)
        for bind, fd, is_dir in held:
            target = root + bind["path"]
            if is_dir:
                os.makedirs(target, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                if not os.path.lexists(target):
                    os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
            kernel.bind(fd, target, bind.get("writable", False))
    finally:
        for _, fd, _ in held:
            os.close(fd)
    os.chdir(root)
    kernel.pivot_root()
    # Read-only from here: in a user namespace the root's files belong to the workers' own
    # uid, and every worker shares this one tmpfs.
    kernel.mount(None, "/", None, Kernel.MS_REMOUNT | Kernel.MS_RDONLY | Kernel.MS_NOSUID | Kernel.MS_NODEV)
    cwd = view.get("cwd") or "/"
    os.chdir(cwd if os.path.isdir(cwd) else "/")
    # The home directory is outside the view, or read-only in it: matplotlib's and
    # fontconfig's caches go to /tmp (each process's own) rather than nowhere, with a warning
    # each start. An attached worker's home is its session directory.
    os.environ["HOME"] = "/tmp"


def private_tmp(settings):
    """Gives this worker (so its session) a /tmp, a /var/tmp and a /dev/shm of its own: fresh
    tmpfs mounts in a mount namespace of its own. Sessions in one sticky /tmp would see each
    other's files and trip over each other's names (`/tmp/plot.png`); here they cannot, and
    nothing they leave there outlives the worker. What the worker needs under /tmp or /var/tmp
    (the server's state directory with the session directories, a venv that lives there) is
    bound back in at its path. Needs one thread (unshare(CLONE_NEWNS) refuses a threaded
    caller) and CAP_SYS_ADMIN (root, or in the template's user namespace): it runs before the
    worker starts threads or gives up its privileges.
    """
    kernel = Kernel()
    ms_nosuid, ms_nodev = Kernel.MS_NOSUID, Kernel.MS_NODEV
    size = int(settings.get("size_bytes", 1 << 30))
    options = f"mode=1777,size={size}"
    kernel.unshare(Kernel.CLONE_NEWNS, "CLONE_NEWNS")
    # Nothing mounted here may reach the namespace it came from; what the server mounts
    # later (the session directory's own tmpfs) still comes in: a slave.
    kernel.mount(None, "/", None, Kernel.MS_REC | Kernel.MS_SLAVE)
    tmps = ["/tmp"]
    if os.path.realpath("/var/tmp") == "/var/tmp" and os.path.isdir("/var/tmp"):  # not a link to /tmp
        tmps.append("/var/tmp")
    # Held open across the mounts, which hide them, to be bound back at their paths.
    held = []
    for path in settings.get("keep") or []:
        path = os.path.realpath(path)
        if any(path.startswith(tmp + "/") for tmp in tmps) and os.path.isdir(path):
            held.append((path, os.open(path, os.O_PATH | os.O_DIRECTORY)))
    for tmp in tmps:
        kernel.mount("tmpfs", tmp, "tmpfs", ms_nosuid | ms_nodev, options)
    for path, fd in held:
        os.makedirs(path, exist_ok=True)
        kernel.mount(f"/proc/self/fd/{fd}", path, None, Kernel.MS_BIND | Kernel.MS_REC)
        os.close(fd)
    if os.path.isdir("/dev/shm"):
        kernel.mount("tmpfs", "/dev/shm", "tmpfs", ms_nosuid | ms_nodev, options)


def confine_to_session(isolation, cwd, shared=None):
    """At attach, before the session's user (or the loss of privileges) and any user code: the
    session's directory is the only one left in view of the sessions directory, and the
    scratch area shows only the directory `shared` (a one-shot's, shared with the rest of its
    request) or nothing (each covered by an empty read-only tmpfs with that one bound back); a
    worker in a pid namespace of its own gets a /proc that shows only its own processes; a
    worker in a user namespace gives up its capabilities there."""
    if not isolation:
        return
    kernel = Kernel()
    view = isolation.get("view") or {}
    for area, keep in ((view.get("sessions"), cwd), (view.get("scratch"), shared)):
        if area:
            cover_all_but(kernel, area, keep)
    if isolation.get("pid_namespace") and os.getpid() == 1:
        flags = Kernel.MS_NOSUID | Kernel.MS_NODEV | Kernel.MS_NOEXEC
        kernel.mount("proc", "/proc", "proc", flags)
    if isolation.get("user_namespace"):
        kernel.drop_capabilities()


def cover_all_but(kernel, area, keep):
    """Covers the directory `area` with an empty read-only tmpfs, binding back `keep` (one of
    its children, or None) at its path."""
    keep = os.path.normpath(keep) if keep else None
    if keep and os.path.dirname(keep) != area:
        keep = None
    held = os.open(keep, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) if keep else None
    try:
        options = "mode=0711,size=64k,nr_inodes=64"
        kernel.mount("tmpfs", area, "tmpfs", Kernel.MS_NOSUID | Kernel.MS_NODEV, options)
        if keep:
            os.mkdir(keep, 0o700)
            kernel.mount(f"/proc/self/fd/{held}", keep, None, Kernel.MS_BIND | Kernel.MS_REC)
        flags = Kernel.MS_REMOUNT | Kernel.MS_RDONLY | Kernel.MS_NOSUID | Kernel.MS_NODEV
        kernel.mount(None, area, None, flags, options)
    finally:
        if held is not None:
            os.close(held)


def probe(isolation):
    """What the server asks before it decides the isolation levels: each mechanism tried in a
    child of its own (which ends with all it made: nothing is left half made), strongest set-up
    first. Prints one JSON object: mechanism -> null (works) or the error."""
    results = {}

    def attempt(name, steps):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            code = 0
            try:
                steps()
            except BaseException as exc:  # noqa: BLE001 - reported to the server
                os.write(w, f"{exc}".encode()[:2000] or type(exc).__name__.encode())
                code = 1
            os._exit(code)
        os.close(w)
        chunks = []
        while True:
            chunk = os.read(r, 4096)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(r)
        _, status = os.waitpid(pid, 0)
        ok = os.waitstatus_to_exitcode(status) == 0
        results[name] = None if ok else (b"".join(chunks).decode(errors="replace") or f"exit status {status}")

    userns = bool(isolation.get("user_namespace"))

    def only(**mechanisms):
        return dict({"user_namespace": userns}, **mechanisms)

    if userns:
        attempt("user_namespace", lambda: enter_namespaces(only()))
    else:
        results["user_namespace"] = "not tried: the server is root"
    attempt("network", lambda: enter_namespaces(only(network_none=True)))
    attempt("mount", lambda: (enter_namespaces(only(mount_namespace=True)), private_tmp({"size_bytes": 1 << 20})))
    view = isolation.get("view")
    if view:

        def whole_view():
            enter_namespaces(only(mount_namespace=True, view=view))
            private_tmp({"size_bytes": 1 << 20, "keep": isolation.get("keep") or []})
            for path in isolation.get("must_see") or []:
                if not os.path.exists(path):
                    raise OSError(f"{path} is not visible in the view")

        attempt("view", whole_view)

    def pid_namespace():
        enter_namespaces(only(mount_namespace=True, view=view))
        Kernel().unshare(Kernel.CLONE_NEWPID, "CLONE_NEWPID")
        child = os.fork()
        if child == 0:
            try:
                Kernel().mount("proc", "/proc", "proc", Kernel.MS_NOSUID | Kernel.MS_NODEV | Kernel.MS_NOEXEC)
                os._exit(0 if os.listdir("/proc/self") else 1)
            except BaseException as exc:  # noqa: BLE001
                sys.stderr.write(f"{exc}\n")
                os._exit(1)
        _, status = os.waitpid(child, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise OSError("a pid namespace can be made, but no /proc of its own can be mounted in it")

    attempt("pid", pid_namespace)
    print(json.dumps(results), flush=True)
    return 0


def install_syscall_filter(spec):
    """Loads the server's seccomp programs (`sandbox/seccomp.rs`) into every thread of this
    process (SECCOMP_FILTER_FLAG_TSYNC: the capture thread runs Python code a cell could
    reach), for good. `seccomp(2)` has no libc wrapper: through `syscall`, with the number the
    server gave. NO_NEW_PRIVS, which an unprivileged caller needs, is set for every worker."""
    import ctypes

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    seccomp_set_mode_filter, seccomp_filter_flag_tsync = 1, 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    for program in spec["programs"]:
        code = base64.b64decode(program)
        buffer = ctypes.create_string_buffer(code, len(code))
        fprog = SockFprog(len(code) // 8, ctypes.cast(buffer, ctypes.c_void_p))
        result = libc.syscall(
            ctypes.c_long(int(spec["syscall"])),
            ctypes.c_ulong(seccomp_set_mode_filter),
            ctypes.c_ulong(seccomp_filter_flag_tsync),
            ctypes.byref(fprog),
        )
        if result < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"seccomp(SECCOMP_SET_MODE_FILTER): {os.strerror(errno)}")
        if result > 0:
            raise OSError(f"seccomp: thread {result} could not take the filter")


def become_user(user, server_pid):
    """Gives up root for the session's user: no supplementary groups, its gid, its uid.

    `os.setuid` changes every thread's credentials (glibc signals them all), so the capture
    thread is the session's user too. A change of credentials clears the parent-death signal,
    so it is set again, and the parent checked once more in case the server died meanwhile.
    """
    import ctypes
    import resource

    nproc = user.get("nproc")
    if nproc:
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    os.setgroups([])
    os.setgid(int(user["gid"]))
    os.setuid(int(user["uid"]))
    if os.getuid() == 0 or os.geteuid() == 0:
        raise PermissionError("still root after setuid")
    set_parent_death_signal()
    if os.getppid() != server_pid:
        os._exit(1)
    # Dumpable again (a change of user makes a process's /proc files root's): nothing
    # privileged is left to protect, and code may read its own /proc/self/fd.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(4, 1, 0, 0, 0)  # 4 = PR_SET_DUMPABLE


def set_child_subreaper():
    """PR_SET_CHILD_SUBREAPER, through libc: orphans of our descendants come back to us."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # 36 = PR_SET_CHILD_SUBREAPER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def set_parent_death_signal():
    """PR_SET_PDEATHSIG(SIGKILL), through libc (Python has no binding for prctl)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(1, signal.SIGKILL, 0, 0, 0) != 0:  # 1 = PR_SET_PDEATHSIG
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def reseed():
    """Forked workers share the template's random state; give each its own streams."""
    import random

    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


# =================================================================================================
# Entry point
# =================================================================================================


def main():
    settings = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    if settings.get("probe"):
        return probe(settings["probe"])
    if settings.get("font_cache") == "build":
        return build_font_cache()
    if settings.get("template"):
        return Template(settings).run()
    return worker_main(settings)


if __name__ == "__main__":
    sys.exit(main())
