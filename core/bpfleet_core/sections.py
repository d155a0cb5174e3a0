"""What a program's ELF section name (its ``SEC()`` annotation) means.

libbpf derives a program's type, its expected attach type and often its attach target
from the section name. This module records those naming conventions as libbpf 1.1
understands them, plus how bpfleet attaches each kind of program.

libbpf 1.x matches a section name in one of two ways:

* exactly, e.g. ``xdp``, ``tc``, ``cgroup_skb/ingress``, ``cgroup/connect4``;
* for conventions that take a target, the bare prefix or the prefix followed by ``/`` and
  the target, e.g. ``kprobe`` or ``kprobe/do_unlinkat``; ``tp/sched/sched_process_exec``.

Anything else (``xdp/foo``, ``tcx/ingress`` from libbpf 1.3, a typo) is unknown to it,
and so an error here. A leading ``?`` only turns off auto-loading and is ignored.
Program and attach types use the kernel's enum names in lower case, as ``helpers`` has.
"""

from __future__ import annotations

from dataclasses import dataclass

from bpfleet_core.manifests import AttachKind

_NO_AUTOLOAD_MARK = "?"


class UnknownSectionError(ValueError):
    """A section name that follows none of libbpf 1.1's conventions."""

    def __init__(self, section: str) -> None:
        super().__init__(
            f"section {section!r} is not a program section libbpf 1.1 knows "
            "(e.g. 'xdp', 'tc', 'tracepoint/<category>/<name>', 'kprobe/<function>')"
        )
        self.section = section


@dataclass(frozen=True, slots=True)
class SectionConvention:
    """One libbpf naming convention: a section name, or a prefix that takes a target."""

    name: str
    program_type: str
    expected_attach_type: str | None = None
    attach_kind: AttachKind | None = None
    takes_target: bool = False


@dataclass(frozen=True, slots=True)
class SectionSpec:
    """What one section name means: the convention it matched and the target it names."""

    program_type: str
    expected_attach_type: str | None
    attach_kind: AttachKind | None
    attach_target: str | None


def _exact(
    name: str,
    program_type: str,
    expected_attach_type: str | None = None,
    attach_kind: AttachKind | None = None,
) -> SectionConvention:
    return SectionConvention(name, program_type, expected_attach_type, attach_kind)


def _targeted(
    name: str,
    program_type: str,
    expected_attach_type: str | None = None,
    attach_kind: AttachKind | None = None,
) -> SectionConvention:
    return SectionConvention(
        name, program_type, expected_attach_type, attach_kind, takes_target=True
    )


_Kind = AttachKind  # short, so each convention fits on one line

SECTION_CONVENTIONS: tuple[SectionConvention, ...] = (
    # Networking: interfaces and traffic control.
    _exact("xdp", "xdp", "xdp", _Kind.XDP),
    _exact("xdp.frags", "xdp", "xdp", _Kind.XDP),
    # Programs run by a devmap/cpumap entry rather than attached to an interface.
    _exact("xdp/devmap", "xdp", "xdp_devmap"),
    _exact("xdp.frags/devmap", "xdp", "xdp_devmap"),
    _exact("xdp/cpumap", "xdp", "xdp_cpumap"),
    _exact("xdp.frags/cpumap", "xdp", "xdp_cpumap"),
    _exact("tc", "sched_cls", attach_kind=_Kind.TC),
    _exact("classifier", "sched_cls", attach_kind=_Kind.TC),
    _exact("action", "sched_act"),
    _exact("socket", "socket_filter"),
    _exact("sk_reuseport", "sk_reuseport", "sk_reuseport_select"),
    _exact("sk_reuseport/migrate", "sk_reuseport", "sk_reuseport_select_or_migrate"),
    _exact("sk_lookup", "sk_lookup", "sk_lookup", _Kind.SK_LOOKUP),
    _exact("sk_skb", "sk_skb"),
    _exact("sk_skb/stream_parser", "sk_skb", "sk_skb_stream_parser"),
    _exact("sk_skb/stream_verdict", "sk_skb", "sk_skb_stream_verdict"),
    _exact("sk_msg", "sk_msg", "sk_msg_verdict"),
    _exact("sockops", "sock_ops", "cgroup_sock_ops"),
    _exact("flow_dissector", "flow_dissector", "flow_dissector"),
    _exact("lwt_in", "lwt_in"),
    _exact("lwt_out", "lwt_out"),
    _exact("lwt_xmit", "lwt_xmit"),
    _exact("lwt_seg6local", "lwt_seg6local"),
    _exact("lirc_mode2", "lirc_mode2", "lirc_mode2"),
    _exact("perf_event", "perf_event"),
    # Control groups.
    _exact("cgroup_skb/ingress", "cgroup_skb", "cgroup_inet_ingress", _Kind.CGROUP_SKB),
    _exact("cgroup_skb/egress", "cgroup_skb", "cgroup_inet_egress", _Kind.CGROUP_SKB),
    _exact("cgroup/skb", "cgroup_skb", attach_kind=_Kind.CGROUP_SKB),
    _exact("cgroup/sock", "cgroup_sock", "cgroup_inet_sock_create", _Kind.CGROUP_SOCK),
    _exact("cgroup/sock_create", "cgroup_sock", "cgroup_inet_sock_create", _Kind.CGROUP_SOCK),
    _exact("cgroup/sock_release", "cgroup_sock", "cgroup_inet_sock_release", _Kind.CGROUP_SOCK),
    _exact("cgroup/post_bind4", "cgroup_sock", "cgroup_inet4_post_bind", _Kind.CGROUP_SOCK),
    _exact("cgroup/post_bind6", "cgroup_sock", "cgroup_inet6_post_bind", _Kind.CGROUP_SOCK),
    *(
        _exact(f"cgroup/{hook}", "cgroup_sock_addr", attach_type, _Kind.CGROUP_SOCK_ADDR)
        for hook, attach_type in (
            ("bind4", "cgroup_inet4_bind"),
            ("bind6", "cgroup_inet6_bind"),
            ("connect4", "cgroup_inet4_connect"),
            ("connect6", "cgroup_inet6_connect"),
            ("sendmsg4", "cgroup_udp4_sendmsg"),
            ("sendmsg6", "cgroup_udp6_sendmsg"),
            ("recvmsg4", "cgroup_udp4_recvmsg"),
            ("recvmsg6", "cgroup_udp6_recvmsg"),
            ("getpeername4", "cgroup_inet4_getpeername"),
            ("getpeername6", "cgroup_inet6_getpeername"),
            ("getsockname4", "cgroup_inet4_getsockname"),
            ("getsockname6", "cgroup_inet6_getsockname"),
        )
    ),
    _exact("cgroup/sysctl", "cgroup_sysctl", "cgroup_sysctl"),
    _exact("cgroup/getsockopt", "cgroup_sockopt", "cgroup_getsockopt"),
    _exact("cgroup/setsockopt", "cgroup_sockopt", "cgroup_setsockopt"),
    _exact("cgroup/dev", "cgroup_device", "cgroup_device"),
    # Tracing. kretprobe/uretprobe attach like their entry twins, with a return flag.
    _targeted("tracepoint", "tracepoint", attach_kind=_Kind.TRACEPOINT),
    _targeted("tp", "tracepoint", attach_kind=_Kind.TRACEPOINT),
    _targeted("raw_tracepoint", "raw_tracepoint", attach_kind=_Kind.RAW_TRACEPOINT),
    _targeted("raw_tp", "raw_tracepoint", attach_kind=_Kind.RAW_TRACEPOINT),
    _targeted("raw_tracepoint.w", "raw_tracepoint_writable", attach_kind=_Kind.RAW_TRACEPOINT),
    _targeted("raw_tp.w", "raw_tracepoint_writable", attach_kind=_Kind.RAW_TRACEPOINT),
    _targeted("kprobe", "kprobe", attach_kind=_Kind.KPROBE),
    _targeted("kretprobe", "kprobe", attach_kind=_Kind.KPROBE),
    _targeted("uprobe", "kprobe", attach_kind=_Kind.UPROBE),
    _targeted("uretprobe", "kprobe", attach_kind=_Kind.UPROBE),
    _targeted("uprobe.s", "kprobe", attach_kind=_Kind.UPROBE),
    _targeted("uretprobe.s", "kprobe", attach_kind=_Kind.UPROBE),
    # These take patterns, syscall names or USDT specs, not one kprobe/uprobe target.
    _targeted("kprobe.multi", "kprobe", "trace_kprobe_multi"),
    _targeted("kretprobe.multi", "kprobe", "trace_kprobe_multi"),
    _targeted("ksyscall", "kprobe"),
    _targeted("kretsyscall", "kprobe"),
    _targeted("usdt", "kprobe"),
    _targeted("tp_btf", "tracing", "trace_raw_tp"),
    _targeted("fentry", "tracing", "trace_fentry", _Kind.FENTRY),
    _targeted("fentry.s", "tracing", "trace_fentry", _Kind.FENTRY),
    _targeted("fexit", "tracing", "trace_fexit", _Kind.FEXIT),
    _targeted("fexit.s", "tracing", "trace_fexit", _Kind.FEXIT),
    _targeted("fmod_ret", "tracing", "modify_return"),
    _targeted("fmod_ret.s", "tracing", "modify_return"),
    _targeted("iter", "tracing", "trace_iter"),
    _targeted("iter.s", "tracing", "trace_iter"),
    _targeted("freplace", "ext"),
    # Security and the rest.
    _targeted("lsm", "lsm", "lsm_mac", _Kind.LSM),
    _targeted("lsm.s", "lsm", "lsm_mac", _Kind.LSM),
    _targeted("lsm_cgroup", "lsm", "lsm_cgroup"),
    _targeted("struct_ops", "struct_ops", attach_kind=_Kind.STRUCT_OPS),
    _exact("syscall", "syscall"),
)

_EXACT = {c.name: c for c in SECTION_CONVENTIONS if not c.takes_target}
_TARGETED = {c.name: c for c in SECTION_CONVENTIONS if c.takes_target}


def section_spec(section: str) -> SectionSpec:
    """Interpret a section name; raises :class:`UnknownSectionError` if libbpf wouldn't."""
    name = section.removeprefix(_NO_AUTOLOAD_MARK)
    convention = _EXACT.get(name)
    target: str | None = None
    if convention is None:
        prefix, _, target_text = name.partition("/")
        convention = _TARGETED.get(prefix)
        if convention is None:
            raise UnknownSectionError(section)
        target = target_text or None  # "kprobe" and "kprobe/" name no target
    return SectionSpec(
        program_type=convention.program_type,
        expected_attach_type=convention.expected_attach_type,
        attach_kind=convention.attach_kind,
        attach_target=target,
    )


def is_known_section(section: str) -> bool:
    try:
        section_spec(section)
    except UnknownSectionError:
        return False
    return True
