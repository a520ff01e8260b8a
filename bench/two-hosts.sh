# Sourced by the benchmarks that need two hosts: two network namespaces, $a (10.$1.0.1, device va-$$) and $b
# (10.$1.0.2, device vb-$$), joined by a veth pair, and a scratch directory $tmp; all removed on exit.
a=kd-a-$$ b=kd-b-$$ tmp=$(mktemp -d)
cleanup() { ip netns del "$a" 2>/dev/null || true; ip netns del "$b" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
ip netns add "$a"; ip netns add "$b"
ip link add "va-$$" netns "$a" type veth peer name "vb-$$" netns "$b"
ip -n "$a" addr add "10.$1.0.1/24" dev "va-$$"; ip -n "$b" addr add "10.$1.0.2/24" dev "vb-$$"
for ns in "$a" "$b"; do ip -n "$ns" link set lo up; done
ip -n "$a" link set "va-$$" up; ip -n "$b" link set "vb-$$" up
