//! A bounded pool of I/O buffers shared by all connections of a server, so the data path
//! does not allocate (and fault in fresh pages) for every request.

use std::sync::Arc;

use parking_lot::Mutex;

/// Smallest buffer class: 4 KiB.
const MIN_CLASS_SHIFT: u32 = 12;
/// Largest pooled class: 64 MiB (larger requests are refused by configuration limits).
const MAX_CLASS_SHIFT: u32 = 26;
const CLASSES: usize = (MAX_CLASS_SHIFT - MIN_CLASS_SHIFT + 1) as usize;
/// Most buffers kept per class, whatever their size.
const MAX_PER_CLASS: usize = 256;

/// Buffers grouped by power-of-two size class.
pub(crate) struct BufferPool {
    classes: [Mutex<Vec<Box<[u8]>>>; CLASSES],
    retain_bytes_per_class: usize,
}

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferPool")
            .field("retain_bytes_per_class", &self.retain_bytes_per_class)
            .finish_non_exhaustive()
    }
}

impl BufferPool {
    /// A pool keeping at most `retain_bytes_per_class` idle bytes in each size class
    /// (but always at least one buffer of each class).
    pub(crate) fn new(retain_bytes_per_class: usize) -> Arc<Self> {
        Arc::new(Self {
            classes: std::array::from_fn(|_| Mutex::new(Vec::new())),
            retain_bytes_per_class,
        })
    }

    fn class_of(len: usize) -> Option<usize> {
        let size = len.max(1 << MIN_CLASS_SHIFT).checked_next_power_of_two()?;
        let shift = size.trailing_zeros();
        if shift > MAX_CLASS_SHIFT {
            return None;
        }
        usize::try_from(shift - MIN_CLASS_SHIFT).ok()
    }

    /// A buffer of exactly `len` usable bytes. Its contents are unspecified (recycled buffers
    /// hold old data): callers overwrite all of it.
    pub(crate) fn get(self: &Arc<Self>, len: usize) -> PooledBuf {
        let data = match Self::class_of(len) {
            Some(class) => self.classes[class].lock().pop().unwrap_or_else(|| {
                vec![0u8; 1usize << (class + MIN_CLASS_SHIFT as usize)].into_boxed_slice()
            }),
            None => vec![0u8; len].into_boxed_slice(),
        };
        PooledBuf {
            data: Some(data),
            len,
            pool: Arc::clone(self),
        }
    }

    fn put(&self, data: Box<[u8]>) {
        let cap = data.len();
        if !cap.is_power_of_two() {
            return;
        }
        let Some(class) = Self::class_of(cap) else {
            return;
        };
        let keep = (self.retain_bytes_per_class / cap).clamp(1, MAX_PER_CLASS);
        let mut list = self.classes[class].lock();
        if list.len() < keep {
            list.push(data);
        }
    }
}

/// A buffer borrowed from a [`BufferPool`]; returns itself to the pool when dropped.
pub(crate) struct PooledBuf {
    data: Option<Box<[u8]>>,
    len: usize,
    pool: Arc<BufferPool>,
}

impl std::fmt::Debug for PooledBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBuf").field("len", &self.len).finish()
    }
}

impl std::ops::Deref for PooledBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.data {
            Some(d) => &d[..self.len],
            None => &[],
        }
    }
}

impl std::ops::DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.data {
            Some(d) => &mut d[..self.len],
            None => &mut [],
        }
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(d) = self.data.take() {
            self.pool.put(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(BufferPool::class_of(0), Some(0));
        assert_eq!(BufferPool::class_of(4096), Some(0));
        assert_eq!(BufferPool::class_of(4097), Some(1));
        assert_eq!(BufferPool::class_of(1 << 26), Some(CLASSES - 1));
        assert_eq!(BufferPool::class_of((1 << 26) + 1), None);
        assert_eq!(BufferPool::class_of(usize::MAX), None);
    }

    #[test]
    fn buffers_are_recycled_and_bounded() {
        let pool = BufferPool::new(1 << 20);
        let mut a = pool.get(100);
        assert_eq!(a.len(), 100);
        a[99] = 7;
        let ptr = a.as_ptr();
        drop(a);
        let b = pool.get(4000);
        assert_eq!(b.as_ptr(), ptr);
        assert_eq!(b.len(), 4000);
        // Only one 1 MiB buffer is retained with a 1 MiB budget.
        let big: Vec<_> = (0..3).map(|_| pool.get(1 << 20)).collect();
        drop(big);
        assert_eq!(pool.classes[8].lock().len(), 1);
        // Oversized buffers are not pooled.
        let huge = pool.get((1 << 26) + 1);
        assert_eq!(huge.len(), (1 << 26) + 1);
    }
}
