package main

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func runFranz(bootstrap, topic string, n, m int) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	group := "franz-group-" + topic
	admin, err := kgo.NewClient(kgo.SeedBrokers(bootstrap))
	if err != nil {
		fail("client: %v", err)
	}
	defer admin.Close()
	adm := kadm.NewClient(admin)
	created, err := adm.CreateTopics(ctx, 3, 1, nil, topic)
	if err != nil || created[topic].Err != nil {
		fail("create topic: %v %v", err, created[topic].Err)
	}
	if created[topic].ID == [16]byte{} {
		fail("the created topic has no id")
	}
	franzProduce(ctx, bootstrap, topic, values(0, n))
	checkExactly("first franz consumer", franzConsume(ctx, bootstrap, topic, group, n), values(0, n))

	offsets, err := adm.FetchOffsets(ctx, group)
	if err != nil || offsets.Error() != nil {
		fail("fetch offsets: %v %v", err, offsets.Error())
	}
	var sum int64
	offsets.Each(func(o kadm.OffsetResponse) { sum += o.At })
	if sum != int64(n) {
		fail("committed offsets sum to %d, not %d", sum, n)
	}
	groups, err := adm.ListGroups(ctx)
	if err != nil || !contains(groups.Groups(), group) {
		fail("list groups: %v %v", err, groups.Groups())
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil || ends.Error() != nil {
		fail("list end offsets: %v %v", err, ends.Error())
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	if total != int64(n) {
		fail("end offsets sum to %d, not %d", total, n)
	}

	franzProduce(ctx, bootstrap, topic, values(n, n+m))
	checkExactly("second franz consumer", franzConsume(ctx, bootstrap, topic, group, m), values(n, n+m))
	if _, err := adm.DeleteTopics(ctx, topic); err != nil {
		fail("delete topic: %v", err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func franzProduce(ctx context.Context, bootstrap, topic string, vals []string) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.DefaultProduceTopic(topic))
	if err != nil {
		fail("producer: %v", err)
	}
	defer cl.Close()
	records := make([]*kgo.Record, 0, len(vals))
	for i, v := range vals {
		records = append(records, &kgo.Record{Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(v)})
	}
	if err := cl.ProduceSync(ctx, records...).FirstErr(); err != nil {
		fail("produce: %v", err)
	}
}

// franzConsume reads with a group member until `want` distinct values arrived, committing
// as it goes, then a little longer to catch anything more.
func franzConsume(ctx context.Context, bootstrap, topic, group string, want int) map[string]bool {
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic), kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		fail("consumer: %v", err)
	}
	defer cl.Close()
	seen := map[string]bool{}
	extra := 0
	for extra < 3 {
		pollCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		fetches := cl.PollFetches(pollCtx)
		cancel()
		if ctx.Err() != nil {
			fail("consuming timed out with %d of %d values", len(seen), want)
		}
		fetches.EachError(func(t string, p int32, err error) {
			if err != context.DeadlineExceeded {
				fail("fetch %s-%d: %v", t, p, err)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) { seen[string(r.Value)] = true })
		if err := cl.CommitUncommittedOffsets(ctx); err != nil {
			fail("commit: %v", err)
		}
		if len(seen) >= want {
			extra++
		}
	}
	return seen
}
