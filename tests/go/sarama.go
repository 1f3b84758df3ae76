package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

func saramaConfig() *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.MaxVersion
	cfg.ClientID = "kbroker-sarama"
	cfg.Producer.Return.Successes = true
	cfg.Producer.Idempotent = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Net.MaxOpenRequests = 1
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.AutoCommit.Enable = false
	return cfg
}

func runSarama(bootstrap, topic string, n, m int) {
	group := "sarama-group-" + topic
	admin, err := sarama.NewClusterAdmin([]string{bootstrap}, saramaConfig())
	if err != nil {
		fail("admin: %v", err)
	}
	defer admin.Close()
	if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 3, ReplicationFactor: 1}, false); err != nil {
		fail("create topic: %v", err)
	}
	saramaProduce(bootstrap, topic, values(0, n))
	checkExactly("first sarama consumer", saramaConsume(bootstrap, topic, group, n), values(0, n))

	offsets, err := admin.ListConsumerGroupOffsets(group, nil)
	if err != nil || offsets.Err != sarama.ErrNoError {
		fail("list group offsets: %v %v", err, offsets.Err)
	}
	var sum int64
	for _, parts := range offsets.Blocks {
		for _, b := range parts {
			sum += b.Offset
		}
	}
	if sum != int64(n) {
		fail("committed offsets sum to %d, not %d", sum, n)
	}
	groups, err := admin.ListConsumerGroups()
	if _, ok := groups[group]; err != nil || !ok {
		fail("list groups: %v %v", err, groups)
	}
	described, err := admin.DescribeConsumerGroups([]string{group})
	if err != nil || len(described) != 1 || described[0].GroupId != group {
		fail("describe groups: %v %v", err, described)
	}

	saramaProduce(bootstrap, topic, values(n, n+m))
	checkExactly("second sarama consumer", saramaConsume(bootstrap, topic, group, m), values(n, n+m))
	if err := admin.DeleteTopic(topic); err != nil {
		fail("delete topic: %v", err)
	}
}

func saramaProduce(bootstrap, topic string, vals []string) {
	p, err := sarama.NewSyncProducer([]string{bootstrap}, saramaConfig())
	if err != nil {
		fail("producer: %v", err)
	}
	defer p.Close()
	msgs := make([]*sarama.ProducerMessage, 0, len(vals))
	for i, v := range vals {
		msgs = append(msgs, &sarama.ProducerMessage{Topic: topic,
			Key: sarama.StringEncoder(fmt.Sprintf("k%d", i)), Value: sarama.StringEncoder(v)})
	}
	if err := p.SendMessages(msgs); err != nil {
		fail("produce: %v", err)
	}
}

type collector struct {
	mu   sync.Mutex
	seen map[string]bool
	want int
	done chan struct{}
	once sync.Once
}

func (c *collector) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (c *collector) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (c *collector) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for msg := range claim.Messages() {
		c.mu.Lock()
		c.seen[string(msg.Value)] = true
		enough := len(c.seen) >= c.want
		c.mu.Unlock()
		s.MarkMessage(msg, "")
		s.Commit()
		if enough {
			c.once.Do(func() { close(c.done) })
		}
	}
	return nil
}

// saramaConsume reads with a group member until `want` distinct values arrived (committing
// each), then a little longer to catch anything more.
func saramaConsume(bootstrap, topic, group string, want int) map[string]bool {
	g, err := sarama.NewConsumerGroup([]string{bootstrap}, group, saramaConfig())
	if err != nil {
		fail("consumer group: %v", err)
	}
	c := &collector{seen: map[string]bool{}, want: want, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for ctx.Err() == nil {
			if err := g.Consume(ctx, []string{topic}, c); err != nil && ctx.Err() == nil {
				fail("consume: %v", err)
			}
		}
	}()
	select {
	case <-c.done:
		time.Sleep(2 * time.Second)
	case <-time.After(2 * time.Minute):
		fail("consuming timed out with %d of %d values", len(c.seen), want)
	}
	cancel()
	<-finished
	if err := g.Close(); err != nil {
		fail("closing the group: %v", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen
}
