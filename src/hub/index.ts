export { pull, DEFAULT_HUB_URL, type PullOptions, type PullResult, type PullProgress, type PulledFile } from './pull.js';
export { selectFiles, globToRegExp, parseOnnxName, PULL_DTYPES, SIDE_FILES, type RepoFile, type Selection } from './select.js';
export { hubCacheDir, repoFolderName, cacheStore, dirStore, type Store } from './store.js';
