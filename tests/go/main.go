// The Go clients against kbroker: franz-go (kgo and kadm) and sarama, each as its users
// run it. For each: the admin client creates a 3-partition topic, a producer writes N
// records (franz-go's default producer is idempotent; sarama's is made so), a consumer
// group reads them all and commits, the admin client reads the group's committed offsets,
// then a second consumer of the same group resumes from the commits and sees only the M
// records written after. Any failed check exits 1 with the reason.
// Usage: kbroker-go-clients franz|sarama <bootstrap> <topic> <n> <m>; prints "OK <n> <m>".
package main

import (
	"fmt"
	"os"
	"strconv"
)

func fail(format string, args ...any) {
	fmt.Printf("FAIL "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 6 {
		fail("usage: %s franz|sarama <bootstrap> <topic> <n> <m>", os.Args[0])
	}
	bootstrap, topic := os.Args[2], os.Args[3]
	n, err1 := strconv.Atoi(os.Args[4])
	m, err2 := strconv.Atoi(os.Args[5])
	if err1 != nil || err2 != nil {
		fail("n and m must be numbers")
	}
	switch os.Args[1] {
	case "franz":
		runFranz(bootstrap, topic, n, m)
	case "sarama":
		runSarama(bootstrap, topic, n, m)
	default:
		fail("unknown client %q", os.Args[1])
	}
	fmt.Printf("OK %d %d\n", n, m)
}

// values returns "v<from>" .. "v<to-1>".
func values(from, to int) []string {
	out := make([]string, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("v%d", i))
	}
	return out
}

// checkExactly fails unless seen holds exactly want.
func checkExactly(who string, seen map[string]bool, want []string) {
	if len(seen) != len(want) {
		fail("%s saw %d values, not %d", who, len(seen), len(want))
	}
	for _, v := range want {
		if !seen[v] {
			fail("%s did not see %s", who, v)
		}
	}
}
