"""The Keras 2 / 3 helpers: rows gathered from partitioned tables."""

import numpy as np
import tensorflow as tf

from keras_mpe import _compat


class GatherRowsTest(tf.test.TestCase):
    def test_sharded_table_keeps_the_ids_order(self):
        table = np.arange(1000, dtype=np.float32)[:, None]
        sharded = tf.__internal__.distribute.ShardedVariable(
            [tf.Variable(table[:500]), tf.Variable(table[500:])]
        )
        ids = tf.constant([600, 0, 999, 499, 500])
        expected = table[ids.numpy()]
        # Eagerly, and traced with the table captured, as a layer reads it.
        self.assertAllEqual(expected, _compat.gather_rows(sharded, ids))
        traced = tf.function(lambda i: _compat.gather_rows(sharded, i))
        self.assertAllEqual(expected, traced(ids))
        # What a plain gather gives in a traced function: shard order.
        plain = tf.function(lambda i: tf.gather(sharded, i))
        self.assertNotAllEqual(expected, plain(ids))


if __name__ == "__main__":
    tf.test.main()
