"""The reference check: do the names a configuration uses exist, and agree.

One check, run once per load (`pymirror.config.load` keeps its result on the `Config`,
and resolution reuses it): Istio's analyzers on the resources as written
(`pymirror.config.analyzers`: destination hosts, ports and subsets), then what no single
object of the model can check (subsets select endpoints, names are unique, delegates,
`mirrorPolicies` and `tcpMirrors` name what exists, listeners make sense). A reference
that may point into a file not given is an error when ``strict`` (what `run` needs) and a
warning for `check`. Errors in the model's own references stop resolution.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .analyzers import analyze
from .binding import gateway_names, groups
from .errors import Path, Problem
from .hosts import domains
from .listeners import listener_issues
from .model import Config, Destination
from .services import Catalog
from .validate import Issue, locate, position, vs_label


@dataclass(frozen=True)
class References:
    """What the reference check found, located."""

    strict: bool
    """Whether a reference that may point into a file not given was an error."""
    written: tuple[Problem, ...] = ()
    """On the resources as written (Istio's analyzers)."""
    model: tuple[Problem, ...] = ()
    """Across the model's objects; errors here stop resolution."""

    @property
    def errors(self) -> list[Problem]:
        """The model's errors: what resolution refuses."""
        return [p for p in self.model if p.severity == "error"]


def check_references(
    config: Config | None,
    catalog: Catalog | None = None,
    *,
    strict: bool = True,
    tcp_served: bool = False,
) -> References:
    """Check the references of the resources in ``catalog`` (as written; ``tcp_served``: a
    listener is tcp, so findings in `tcp` routes can stop a run) and of ``config`` (None
    when it did not validate)."""
    written = analyze(catalog, strict=strict, tcp_served=tcp_served) if catalog else []
    model = locate(config, list(_Checker(config, strict).run())) if config is not None else []
    return References(strict, tuple(written), tuple(model))


def references_of(config: Config, *, strict: bool = True) -> References:
    """``config``'s reference check: the one its load ran at this strictness, else (a
    Config built in code) one run now and kept."""
    done: References | None = config._references
    if done is None or done.strict != strict:
        done = config._references = check_references(config, strict=strict)
    return done


class _Checker:
    """The model's own references: what no single object can check."""

    def __init__(self, config: Config, strict: bool = True) -> None:
        self.config = config
        self.strict = strict

    def where(self, path: Path) -> str:
        return position(self.config, path)

    def run(self) -> Iterator[Issue]:
        yield from self.services()
        yield from self.virtual_services()
        yield from self.delegates()
        yield from self.mirror_policies()
        yield from self.tcp_mirrors()
        yield from listener_issues(self.config)

    def services(self) -> Iterator[Issue]:
        for name, service in self.config.services.items():
            if service._source is not None:
                continue  # a resource's: `analyzers` checks it as Istio does
            for subset in service.subsets:
                if not service.select(subset):
                    labels = ", ".join(f"{k}: {v}" for k, v in service.subsets[subset].items())
                    yield Issue(
                        ("services", name, "subsets", subset),
                        f"subset `{subset}` of service `{name}` selects no endpoint: none "
                        f"has all the labels {{{labels}}}",
                        True,
                    )

    def virtual_services(self) -> Iterator[Issue]:
        names: dict[tuple[str | None, str], Path] = {}
        hosts: dict[tuple[str, str], Path] = {}
        defined = gateway_names(self.config)
        for i, vs in enumerate(self.config.virtual_services):
            here: Path = ("virtualServices", i)
            name = (vs.namespace, vs.name)
            if name in names:
                yield Issue(
                    (*here, "name"),
                    f"virtual service `{vs.name}` is already defined at {self.where(names[name])}",
                )
            names.setdefault(name, (*here, "name"))
            # Only HTTP routes are served: tcp- or tls-only hosts claim no request host.
            # A host is claimed once per listener group (the mesh's, each gateway's).
            for j, host in enumerate(vs.hosts if vs.serves_http else ()):
                claims = [
                    (g, d.lower()) for g in groups(vs, defined) for d in domains(host, vs.namespace)
                ]
                if (taken := next((c for c in claims if c in hosts), None)) is not None:
                    yield Issue(
                        (*here, "hosts", j),
                        f"host `{taken[1]}` is already served by the "
                        f"virtual service at {self.where(hosts[taken])}",
                    )
                for claim in claims:
                    hosts.setdefault(claim, (*here, "hosts", j))
            resource = self.config.source(i) is not None
            found = [
                (("http", j, *path), dest)
                for j, route in enumerate(vs.http)
                for path, dest in route.destinations()
            ]
            for j, tcp in enumerate(vs.tcp if self.tcp_served else ()):
                found += [
                    (("tcp", j, "route", k, "destination"), d.destination)
                    for k, d in enumerate(tcp.route)
                ]
                if tcp.mirror is not None:
                    found.append((("tcp", j, "mirror"), tcp.mirror))
            for j, tls in enumerate(vs.tls if self.tls_served else ()):
                found += [
                    (("tls", j, "route", k, "destination"), d.destination)
                    for k, d in enumerate(tls.route)
                ]
            for path, dest in found:
                # A resource's destinations are checked as Istio's analyzer does
                # (`analyzers`), unless they name a service of the routes format.
                if not resource or self.own_service(dest.host):
                    yield from self.destination((*here, *path), dest)

    @property
    def tls_served(self) -> bool:
        """`tls` routes are served only where a listener passes TLS through."""
        return any(
            self.config.listener_protocol(lst.address, lst.protocol) == "tls"
            for lst in self.config.listeners
        )

    @property
    def tcp_served(self) -> bool:
        """`tcp` routes are served only where a listener is tcp."""
        return any(
            self.config.listener_protocol(lst.address, lst.protocol) == "tcp"
            for lst in self.config.listeners
        )

    def own_service(self, host: str) -> bool:
        """Whether ``host`` is a service the routes format declares (not a resource's)."""
        service = self.config.services.get(host)
        return service is not None and service._source is None

    def delegates(self) -> Iterator[Issue]:
        """`delegate` names a virtual service without hosts; every such one is named."""
        vss = self.config.virtual_services
        by_name = {(vs.namespace, vs.name): i for i, vs in enumerate(vss)}
        used: set[int] = set()
        for i, vs in enumerate(vss):
            for j, route in enumerate(vs.http):
                if route.delegate is None:
                    continue
                at: Path = ("virtualServices", i, "http", j, "delegate")
                namespace = route.delegate.namespace or vs.namespace
                target = by_name.get((namespace, route.delegate.name))
                if target is None:
                    where = f" in namespace `{namespace}`" if namespace else ""
                    yield Issue(
                        (*at, "name"),
                        f"no virtual service `{route.delegate.name}`{where} in the files given: "
                        "this entry serves nothing",
                        severity="error" if self.strict else "warning",
                        code="unknown-delegate",
                    )
                elif vss[target].hosts:
                    yield Issue(
                        (*at, "name"),
                        f"virtual service `{route.delegate.name}` has `hosts`, so it is not a "
                        "delegate (a delegate has none)",
                        code="not-a-delegate",
                    )
                else:
                    used.add(target)
        for i, vs in enumerate(vss):
            if vs.is_delegate and i not in used:
                yield Issue(
                    ("virtualServices", i, "name"),
                    "not served: a virtual service without `hosts` is a delegate, and no "
                    "`delegate` names it",
                    severity="warning",
                    code="unused-delegate",
                )

    def mirror_policies(self) -> Iterator[Issue]:
        """Each of `mirrorPolicies` names one virtual service (and route) that exists."""
        vss = self.config.virtual_services
        seen: dict[tuple[int, str | None], Path] = {}
        for i, policy in enumerate(self.config.mirror_policies):
            here: Path = ("mirrorPolicies", i)
            found, issue = self.named(here, policy.virtual_service)
            if issue is not None:
                yield issue
                continue
            vs = vss[found]
            index = policy.route_index(vs)
            if policy.route is not None and index is None:
                routes = ", ".join(f"`{r.name or j}`" for j, r in enumerate(vs.http)) or "none"
                yield Issue(
                    (*here, "route"),
                    f"virtual service `{vs_label(vs)}` has no http route `{policy.route}` "
                    f"(its routes: {routes})",
                    code="unknown-route",
                )
                continue
            key = (found, policy.route)
            if key in seen:
                yield Issue(
                    here,
                    f"`{vs_label(vs)}`"
                    + (f" route `{policy.route}`" if policy.route is not None else "")
                    + f" already has a mirror policy at {self.where(seen[key])}",
                    code="duplicate-mirror-policy",
                )
                continue
            seen[key] = (*here, "virtualService")
            routes_ = [vs.http[index]] if index is not None else vs.http
            if not any(r.mirror_policies for r in routes_):
                yield Issue(
                    here,
                    "applies to no mirror: "
                    + (f"route `{policy.route}`" if policy.route is not None else "no route")
                    + f" of `{vs_label(vs)}` has `mirror` or `mirrors`",
                    severity="warning",
                    code="policy-without-mirror",
                )

    def named(self, here: Path, ref: str) -> tuple[int, Issue | None]:
        """The index of the one virtual service that ``ref`` (the `virtualService` of the
        entry at ``here``) names; else why not."""
        vss = self.config.virtual_services
        matched = [k for k, vs in enumerate(vss) if vs.is_named(ref)]
        if not matched:
            known = ", ".join(f"`{vs_label(vs)}`" for vs in vss) or "none"
            return -1, Issue(
                (*here, "virtualService"),
                f"no virtual service `{ref}` in the files given (known: {known})",
                severity="error" if self.strict else "warning",
                code="unknown-virtual-service",
            )
        if len(matched) > 1:
            names = ", ".join(f"`{vs_label(vss[k])}`" for k in matched)
            return -1, Issue(
                (*here, "virtualService"),
                f"`{ref}` names several virtual services ({names}): write `namespace/name`",
                code="ambiguous-virtual-service",
            )
        return matched[0], None

    def tcp_mirrors(self) -> Iterator[Issue]:
        """Each of `tcpMirrors` names a virtual service with tcp routes (and one of them),
        gives no tcp route a second mirror, and names a mirror destination that resolves."""
        vss = self.config.virtual_services
        # Where each tcp route (virtual service, route) got a mirror from `tcpMirrors`.
        given: dict[tuple[int, int], Path] = {}
        for i, policy in enumerate(self.config.tcp_mirrors):
            here: Path = ("tcpMirrors", i)
            found, issue = self.named(here, policy.virtual_service)
            if issue is not None:
                yield issue
                continue
            vs = vss[found]
            if not vs.tcp:
                yield Issue(
                    (*here, "virtualService"),
                    f"virtual service `{vs_label(vs)}` has no tcp routes to mirror",
                    code="no-tcp-route",
                )
                continue
            if not policy.route_indexes(vs):
                yield Issue(
                    (*here, "route"),
                    f"virtual service `{vs_label(vs)}` has no tcp route {policy.route} (its "
                    f"tcp routes: 0 to {len(vs.tcp) - 1})",
                    code="unknown-route",
                )
                continue
            for j in policy.route_indexes(vs):
                route: Path = ("virtualServices", found, "tcp", j)
                if vs.tcp[j].mirror is not None:
                    other = f"its own `mirror` at {self.where((*route, 'mirror'))}"
                elif (found, j) in given:
                    other = f"the `tcpMirrors` entry at {self.where(given[(found, j)])}"
                else:
                    given[(found, j)] = (*here, "virtualService")
                    continue
                yield Issue(
                    here,
                    f"tcp route {j} of `{vs_label(vs)}` already has a mirror, from {other}: "
                    "declare it in one place",
                    code="duplicate-tcp-mirror",
                )
            # As a mirror written on the route: a resource's is checked by `analyzers`.
            resource = self.config.source(found) is not None
            if self.tcp_served and (not resource or self.own_service(policy.mirror.host)):
                yield from self.destination((*here, "mirror"), policy.mirror)

    def destination(self, path: Path, dest: Destination) -> Iterator[Issue]:
        service = self.config.services.get(dest.host)
        if service is not None and service.endpoints:
            if dest.port is not None and not service.ports:
                yield Issue(
                    (*path, "port"),
                    f"`port` only applies to hosts resolved by DNS; the "
                    f"endpoints of service `{dest.host}` carry their own ports",
                    True,
                )
            elif service.ports and service.port(dest.port.number if dest.port else None) is None:
                ports = ", ".join(str(p.number) for p in service.ports)
                yield Issue(
                    (*path, "port") if dest.port else path,
                    f"service `{dest.host}` has no port {dest.port.number} (its ports: {ports})"
                    if dest.port
                    else f"service `{dest.host}` has several ports ({ports}): set `port.number`",
                    code="unknown-port" if dest.port else "port-required",
                )
            if dest.subset is not None and dest.subset not in service.subsets:
                known = ", ".join(f"`{s}`" for s in service.subsets) or "none"
                yield Issue(
                    (*path, "subset"),
                    f"service `{dest.host}` has no subset `{dest.subset}` (its subsets: {known})",
                    code="unknown-subset",
                )
        elif dest.subset is not None:
            why = (
                "declares no endpoints"
                if service is not None
                else "is not declared under `services`"
            )
            yield Issue(
                (*path, "subset"),
                f"`{dest.host}` {why}, so it is resolved by DNS and has no subset `{dest.subset}`",
                code="unknown-subset",
            )
