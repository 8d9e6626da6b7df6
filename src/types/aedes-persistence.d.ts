// aedes-persistence ships types for its in-memory class but maps none to this subpath.
declare module 'aedes-persistence/asyncPersistence.js' {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- the shipped declaration uses `export =`
  import MemoryPersistence = require('aedes-persistence/types/asyncPersistence');
  export default MemoryPersistence;
}
