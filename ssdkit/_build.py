"""Build the operator libraries from ``src/operators`` (standard library only).

Used by ``setup.py`` (loaded by file path, before ssdkit is importable) and by ``ssdkit.ops`` to
compute the source hash that detects a stale library. Commands::

    CPU : g++ -std=c++17 -O3 -fopenmp -shared -fPIC -I$MX/include -Isrc/operators \
              src/operators/**/*.cc $MX/src/lib_api.cc -o ssdkit/lib/libssdkit_ops.so
    CUDA: nvcc -c src/operators/**/*.cu, g++ -DSSDKIT_WITH_CUDA the .cc files,
          link with -lcudart into ssdkit/lib/libssdkit_ops_cuda.so
"""
import hashlib
import os
import shutil
import subprocess
import tempfile

CPU_LIBRARY = "libssdkit_ops.so"
CUDA_LIBRARY = "libssdkit_ops_cuda.so"
REBUILD_COMMAND = "pip install --no-build-isolation -e .   (or: python setup.py build_ext --inplace)"
CUDA_ARCHS = ("80", "90")
# No FMA contraction: the kernels run the CPU's host/device functions (IoU, softmax, NMS test) and
# then give the CPU's results bit for bit; they are memory-bound, so the cost is small.
NVCC_FLAGS = ("-std=c++17", "-O3", "-fmad=false")
_SOURCE_SUFFIXES = (".h", ".cc", ".cu")


def source_files(src_dir, suffixes=_SOURCE_SUFFIXES):
    """Sorted paths of the operator sources under ``src_dir`` with the given suffixes."""
    found = []
    for root, _dirs, files in os.walk(src_dir):
        for name in files:
            if name.endswith(tuple(suffixes)):
                found.append(os.path.join(root, name))
    return sorted(found)


def source_hash(src_dir):
    """sha256 (first 16 hex digits) over relative paths and contents of every operator source."""
    digest = hashlib.sha256()
    for path in source_files(src_dir):
        digest.update(os.path.relpath(path, src_dir).replace(os.sep, "/").encode())
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


def mxnet_root():
    """(version, folder) of the installed mxnet, read without importing it (no CUDA driver needed)."""
    import importlib.metadata
    import importlib.util

    spec = importlib.util.find_spec("mxnet")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("mxnet is not installed; install requirements.txt first "
                           "(pip install -r requirements.txt)")
    root = list(spec.submodule_search_locations)[0]
    version = None
    for dist in ("mxnet", "mxnet-cu112", "mxnet-mkl"):
        try:
            version = importlib.metadata.version(dist)
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    if version is None:
        raise RuntimeError("cannot tell the installed mxnet's version")
    header = os.path.join(root, "include", "mxnet", "lib_api.h")
    if not os.path.exists(header):
        raise RuntimeError("mxnet at %s has no include/mxnet/lib_api.h; ssdkit needs mxnet>=1.9" % root)
    return version, root


def _run(cmd, cwd):
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise RuntimeError("command failed (%d): %s\n%s" % (proc.returncode, " ".join(cmd), proc.stdout))


def _atomic_copy(src, dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = dst + ".tmp%d" % os.getpid()
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _common_flags(src_dir, mx_version, mx_root):
    return ["-std=c++17", "-O3", "-fPIC", "-fopenmp", "-Wall", "-Wno-unused-function",
            "-I" + os.path.join(mx_root, "include"), "-I" + src_dir,
            '-DSSDKIT_MXNET_VERSION="%s"' % mx_version,
            '-DSSDKIT_SOURCE_HASH="%s"' % source_hash(src_dir)]


def build_cpu(src_dir, out_path, jobs=2):
    """Compile every ``.cc`` under ``src_dir`` plus mxnet's lib_api.cc into ``out_path``.

    Objects are compiled in parallel (``jobs`` at a time); the library is written atomically.
    """
    mx_version, mx_root = mxnet_root()
    flags = _common_flags(src_dir, mx_version, mx_root)
    sources = source_files(src_dir, (".cc",)) + [os.path.join(mx_root, "src", "lib_api.cc")]
    with tempfile.TemporaryDirectory() as tmp:
        objects = _compile_parallel(["g++"] + flags, sources, tmp, jobs, src_dir)
        lib = os.path.join(tmp, CPU_LIBRARY)
        _run(["g++", "-shared", "-fopenmp", "-o", lib] + objects, src_dir)
        _atomic_copy(lib, out_path)
    return out_path


def build_cuda(src_dir, out_path, jobs=2, nvcc="nvcc", archs=CUDA_ARCHS):
    """Build the CUDA library: .cu by nvcc, .cc by g++ with SSDKIT_WITH_CUDA, linked with cudart."""
    mx_version, mx_root = mxnet_root()
    nvcc_path = shutil.which(nvcc)
    if nvcc_path is None:
        raise RuntimeError("SSDKIT_WITH_CUDA=1 but nvcc is not on PATH")
    lib_dir = cuda_library_dir(nvcc_path)
    flags = _common_flags(src_dir, mx_version, mx_root) + ["-DSSDKIT_WITH_CUDA"]
    gencode = []
    for arch in archs:
        gencode += ["-gencode", "arch=compute_%s,code=sm_%s" % (arch, arch)]
    with tempfile.TemporaryDirectory() as tmp:
        cc = source_files(src_dir, (".cc",)) + [os.path.join(mx_root, "src", "lib_api.cc")]
        objects = _compile_parallel(["g++"] + flags, cc, tmp, jobs, src_dir)
        nvcc_cmd = [nvcc_path] + list(NVCC_FLAGS) + ["-Xcompiler", "-fPIC", "-I" + src_dir,
                                                     "-DSSDKIT_WITH_CUDA"] + gencode
        objects += _compile_parallel(nvcc_cmd, source_files(src_dir, (".cu",)), tmp, jobs, src_dir)
        lib = os.path.join(tmp, CUDA_LIBRARY)
        _run(["g++", "-shared", "-fopenmp", "-o", lib] + objects +
             ["-L" + lib_dir, "-Wl,-rpath," + lib_dir, "-lcudart"], src_dir)
        _atomic_copy(lib, out_path)
    return out_path


SELFTEST_PROGRAM = "ssdkit_selftest"


def build_selftest(src_dir, selftest_dir, out_path, cuda=True, jobs=2, nvcc="nvcc", archs=CUDA_ARCHS,
                   optimize="-O3"):
    """Build the standalone operator self-test (tests/gpu_selftest) into the executable ``out_path``.

    It links the operator sources themselves: every ``.cc`` under ``src_dir`` and mxnet's lib_api.cc
    (g++), ``selftest_dir``/selftest.cc, and with ``cuda`` every ``.cu`` plus ``selftest_dir``/device.cu
    (nvcc, NVCC_FLAGS, one -gencode per arch in ``archs``) and cudart. Without ``cuda`` (no nvcc) the
    program has its CPU half only. Needs mxnet's headers (the CPU wheel), not a GPU build of MXNet.
    ``optimize`` is the g++ level (-O1 builds faster; without -ffast-math every level gives the same
    float results). Returns ``out_path``.
    """
    src_dir, selftest_dir = os.path.abspath(src_dir), os.path.abspath(selftest_dir)
    out_path = os.path.abspath(out_path)
    mx_version, mx_root = mxnet_root()
    flags = [f for f in _common_flags(src_dir, mx_version, mx_root) if f != "-O3"] + [optimize]
    link = []
    if cuda:
        nvcc_path = shutil.which(nvcc)
        if nvcc_path is None:
            raise RuntimeError("building the CUDA self-test needs nvcc on PATH (or cuda=False for its CPU half)")
        flags.append("-DSSDKIT_WITH_CUDA")
        lib_dir = cuda_library_dir(nvcc_path)
        link = ["-L" + lib_dir, "-Wl,-rpath," + lib_dir, "-lcudart"]
    cc = source_files(src_dir, (".cc",)) + [os.path.join(mx_root, "src", "lib_api.cc"),
                                            os.path.join(selftest_dir, "selftest.cc")]
    with tempfile.TemporaryDirectory() as tmp:
        objects = []
        if cuda:
            gencode = []
            for arch in archs:
                gencode += ["-gencode", "arch=compute_%s,code=sm_%s" % (arch, arch)]
            nvcc_cmd = [nvcc_path] + list(NVCC_FLAGS) + ["-I" + src_dir, "-I" + selftest_dir,
                                                         "-DSSDKIT_WITH_CUDA"] + gencode
            cu = source_files(src_dir, (".cu",)) + [os.path.join(selftest_dir, "device.cu")]
            os.makedirs(os.path.join(tmp, "cu"))
            objects += _compile_parallel(nvcc_cmd, cu, os.path.join(tmp, "cu"), jobs, src_dir)
        os.makedirs(os.path.join(tmp, "cc"))
        objects += _compile_parallel(["g++"] + flags + ["-I" + selftest_dir], cc, os.path.join(tmp, "cc"), jobs,
                                     src_dir)
        exe = os.path.join(tmp, SELFTEST_PROGRAM)
        _run(["g++", "-fopenmp", "-o", exe] + objects + link, src_dir)
        _atomic_copy(exe, out_path)
    os.chmod(out_path, 0o755)
    return out_path


def cuda_library_dir(nvcc_path):
    """The folder holding libcudart.so: $CUDA_HOME, the toolkit nvcc runs from, or /usr/local/cuda*.

    ``nvcc`` may be a wrapper script (e.g. /usr/local/bin/nvcc exec'ing /usr/local/cuda-13.0/bin/nvcc),
    so the toolkit is also found by asking nvcc itself (``nvcc --dryrun`` prints its TOP folder).
    """
    candidates = []
    if os.environ.get("CUDA_HOME"):
        candidates.append(os.environ["CUDA_HOME"])
    candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc_path))))
    try:
        dry = subprocess.run([nvcc_path, "--dryrun", "--version"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=60).stdout
        for line in dry.splitlines():
            if "TOP=" in line:
                candidates.append(line.split("TOP=", 1)[1].strip())
    except (OSError, subprocess.SubprocessError):
        pass
    candidates += ["/usr/local/cuda"] + sorted(
        (os.path.join("/usr/local", d) for d in os.listdir("/usr/local") if d.startswith("cuda-")), reverse=True)
    for home in candidates:
        for sub in ("lib64", "lib", os.path.join("targets", "x86_64-linux", "lib")):
            folder = os.path.join(home, sub)
            if os.path.exists(os.path.join(folder, "libcudart.so")):
                return folder
    raise RuntimeError("libcudart.so not found (looked in %s); set CUDA_HOME" % ", ".join(candidates))


def _compile_parallel(cmd, sources, obj_dir, jobs, cwd):
    objects, procs = [], []
    for i, src in enumerate(sources):
        obj = os.path.join(obj_dir, "%03d_%s.o" % (i, os.path.basename(src)))
        objects.append(obj)
        procs.append((cmd + ["-c", src, "-o", obj], src))
    running = []
    for full, src in procs:
        running.append((subprocess.Popen(full, cwd=cwd, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True), full))
        if len(running) >= max(1, jobs):
            _wait(running.pop(0))
    for item in running:
        _wait(item)
    return objects


def _wait(item):
    proc, cmd = item
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError("compile failed: %s\n%s" % (" ".join(cmd), out))
